"""What a call cost, in USD, from the tokens (or images, or audio minutes) it used and a price table.

The table ships as ``prices.json`` beside this module, with the date and the page it was copied
from; ``OPENAI_PACK_PRICES=/path/prices.json`` points at a file whose entries replace the shipped
ones (model by model, so a user file may hold only the models it changes).

A cost is an *estimate* from list prices: the organization's invoice (``/organization/costs``)
is the authority. When a model is not in the table, or the answer did not say what it used, the
cost is ``None`` with the reason: a wrong number on a customer's bill is worse than no number.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from integration.errors import ConfigError

__all__ = ["PRICES_ENV", "Cost", "PriceTable", "cost_of", "estimate_upper_bound", "prices", "token_counts"]

PRICES_ENV = "OPENAI_PACK_PRICES"
SHIPPED = Path(__file__).with_name("prices.json")
_SECTIONS = ("tokens_per_million", "images_per_image", "audio_per_minute", "speech_per_million_characters")
#: A dated snapshot (``gpt-4o-2024-08-06``, ``gpt-4-0613``) is priced as its family.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
_IMAGE_ACTIONS = {"create_image", "create_image_edit", "create_image_variation"}
_AUDIO_ACTIONS = {"create_transcription", "create_translation"}


@dataclass(frozen=True)
class Cost:
    """One call's estimated cost: ``usd`` is None when it cannot be known, and ``reason`` says why."""

    usd: float | None
    model: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"usd": self.usd, "model": self.model}
        if self.reason:
            out["reason"] = self.reason
        return out


class PriceTable:
    """The shipped table, with a user file's entries laid over it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.version = str(data.get("version", ""))
        self.batch_discount = float(data.get("batch_discount", 0.5))

    def family(self, section: str, model: str | None) -> str | None:
        """The table's name for ``model`` in ``section``: itself, or its family for a dated snapshot."""
        if not model:
            return None
        entries = self.data.get(section) or {}
        if model in entries:
            return model
        base = _SNAPSHOT.sub("", model)
        return base if base in entries else None

    def entry(self, section: str, model: str | None) -> Any:
        name = self.family(section, model)
        return None if name is None else self.data[section][name]


def _load(path: Path, label: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror}", field=label) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{label}: {path} is not a JSON price table ({type(exc).__name__})", field=label) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: {path} must hold a JSON object", field=label)
    for section in _SECTIONS:
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"{label}: {section} must be an object of model -> prices", field=f"{label}.{section}")
    return data


@cache
def _table(override: str) -> PriceTable:
    data = _load(SHIPPED, "prices.json")
    if override:
        user = _load(Path(override).expanduser(), PRICES_ENV)
        for section in _SECTIONS:
            data[section] = {**data.get(section, {}), **user.get(section, {})}
        for key in ("version", "as_of", "source", "batch_discount"):
            if key in user:
                data[key] = user[key]
    return PriceTable(data)


def prices() -> PriceTable:
    """The table in force (re-read when ``OPENAI_PACK_PRICES`` changes)."""
    return _table(os.environ.get(PRICES_ENV, "").strip())


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def token_counts(usage: dict[str, Any]) -> tuple[int, int, int] | None:
    """(input, cached input, output) from either usage shape (chat/completions or responses/images)."""
    if not any(k in usage for k in ("prompt_tokens", "input_tokens", "completion_tokens", "output_tokens")):
        return None
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    inputs = _int(usage.get("prompt_tokens")) or _int(usage.get("input_tokens"))
    outputs = _int(usage.get("completion_tokens")) or _int(usage.get("output_tokens"))
    return inputs, min(cached, inputs), outputs


def _usd(value: float) -> float:
    return round(value, 10)


def _model_of(inputs: dict[str, Any], output: Any) -> str | None:
    """The model that answered (the response says which snapshot), else the one asked for."""
    for source in (output, inputs):
        if isinstance(source, dict) and isinstance(source.get("model"), str) and source["model"]:
            return str(source["model"])
    return None


def cost_of(action: str, inputs: dict[str, Any], output: Any, usage: dict[str, Any] | None,
            *, takes_model: bool = True, table: PriceTable | None = None) -> Cost:
    """The estimated cost of one finished call (see the module docstring for when it is None)."""
    table = table or prices()
    model = _model_of(inputs, output)
    if isinstance(output, dict) and isinstance(output.get("usage"), dict):
        usage = output["usage"]  # the full shape, with cached-token details
    usage = usage or {}
    if action in _IMAGE_ACTIONS:
        return _image_cost(inputs, output, usage, model, table)
    if action in _AUDIO_ACTIONS:
        return _audio_cost(output, model, table)
    counts = token_counts(usage)
    if counts is None:
        if takes_model:
            return Cost(None, model, "the answer reported no token usage")
        return Cost(0.0, None)  # listing, retrieving, deleting: not billed per call
    price = table.entry("tokens_per_million", model)
    if price is None:
        return Cost(None, model, f"no price for model {model!r} in the price table {table.version}")
    fresh, cached, out = counts[0] - counts[1], counts[1], counts[2]
    cached_price = price.get("cached_input")
    usd = (fresh * price["input"] + cached * (price["input"] if cached_price is None else cached_price)
           + out * price["output"]) / 1_000_000
    return Cost(_usd(usd), model)


def _image_cost(inputs: dict[str, Any], output: Any, usage: dict[str, Any], model: str | None,
                table: PriceTable) -> Cost:
    model = model or "dall-e-2"  # the API's default for the image endpoints
    counts = token_counts(usage)
    price = table.entry("tokens_per_million", model)
    if counts is not None and price is not None:  # gpt-image-1 bills tokens, and says how many
        usd = (counts[0] * price["input"] + counts[2] * price["output"]) / 1_000_000
        return Cost(_usd(usd), model)
    per_image = table.entry("images_per_image", model)
    if per_image is None:
        return Cost(None, model, f"no image price for model {model!r} in the price table {table.version}")
    quality = str(inputs.get("quality") or "standard")
    size = str(inputs.get("size") or "1024x1024")
    by_size = per_image.get(quality)
    if not isinstance(by_size, dict) or size not in by_size:
        return Cost(None, model, f"no price for {model} images of quality {quality!r} and size {size!r}")
    images = len(output.get("data") or []) if isinstance(output, dict) else 0
    return Cost(_usd(images * float(by_size[size])), model)


def _audio_cost(output: Any, model: str | None, table: PriceTable) -> Cost:
    per_minute = table.entry("audio_per_minute", model)
    if per_minute is None:
        return Cost(None, model, f"no audio price for model {model!r} in the price table {table.version}")
    duration = output.get("duration") if isinstance(output, dict) else None
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        return Cost(None, model, "the answer did not say the audio's duration (ask for response_format verbose_json)")
    return Cost(_usd(float(duration) / 60 * float(per_minute)), model)


def estimate_upper_bound(inputs: dict[str, Any], estimated_tokens: int, output_cap: int,
                         *, table: PriceTable | None = None) -> Cost:
    """Before a call: the most it should cost, every estimated token priced at the dearer of input and output.

    ``estimated_tokens`` is the manifest's estimate of what is sent plus the answer's cap
    (``ActionManifest.estimate_tokens``), ``output_cap`` the answer's share of it.
    """
    table = table or prices()
    model = inputs.get("model") if isinstance(inputs.get("model"), str) else None
    price = table.entry("tokens_per_million", model)
    if price is None:
        return Cost(None, model, f"no price for model {model!r} in the price table {table.version}")
    sent = max(0, estimated_tokens - output_cap)
    usd = (sent * price["input"] + output_cap * max(price["output"], price["input"])) / 1_000_000
    return Cost(_usd(usd), model)
