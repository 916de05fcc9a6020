"""One action's inputs as the parts of one HTTP request: path, query, headers and body.

The manifest's ``http`` binding says where each input goes; this module is the one place that
turns values into wire form, so handlers, pagination and ``Call.default`` all build requests alike:

- path fields are percent-escaped (``/``, ``?`` and ``#`` included, so an id can never reach another route;
  ``:`` and ``@`` stay, as in fine-tuned model ids);
- query fields: scalars as text, booleans ``true``/``false``, lists as repeated ``name[]=value`` and
  objects as ``name[key]=value``: the brackets form OpenAI's SDKs send (``include[]=…``,
  ``metadata[key]=…``); a field whose spec name already ends in ``[]`` is declared without it;
- header fields go as the header the binding names (a list joined with commas), next to the
  binding's constant headers (``OpenAI-Beta: assistants=v2``);
- the rest is the body: JSON, multipart parts (files read now), or nothing.

Pack-only inputs (``x-pack-only``) are never sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from actions._files import read_file_field
from actions._manifest import ActionManifest
from integration.errors import ConfigError, InputError
from integration.model import AuthPlacement, Integration, Provider

__all__ = ["Request", "bracketed_pairs", "build_request", "check_credentials", "multipart_body"]


@dataclass
class Request:
    """What ``Call.send`` takes: one request, ready for the client."""

    method: str
    path: str
    params: list[tuple[str, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    files: list[tuple[str, Any]] | None = None
    admin: bool = False
    streaming: bool = False

    def with_param(self, name: str, value: str) -> Request:
        """The same request with one query parameter set (replacing it): how the next page is asked for."""
        kept = [(key, text) for key, text in self.params or [] if key != name]
        return Request(self.method, self.path, [*kept, (name, value)], dict(self.headers), self.json_body,
                       self.files, self.admin, self.streaming)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def bracketed_pairs(name: str, value: Any) -> list[tuple[str, str]]:
    """One field as (name, text) pairs: lists as ``name[]``, objects as ``name[key]``, nested alike."""
    if isinstance(value, list):
        return [pair for item in value for pair in bracketed_pairs(f"{name}[]", item)]
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in bracketed_pairs(f"{name}[{key}]", item)]
    return [(name, _text(value))]


def _header_text(field_name: str, value: Any, action: str) -> str:
    text = ",".join(_text(v) for v in value) if isinstance(value, list) else _text(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or not text.isascii():
        raise InputError([{"field": field_name, "reason": "must be printable ASCII on one line (it is sent as an "
                           "HTTP header)"}], action=action)
    return text


def multipart_body(manifest: ActionManifest, sendable: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every part for httpx's ``files=``: file fields read now (a missing file is a field-named InputError).

    Plain fields are parts without a file name, so the body is multipart even when no file is
    given (httpx would send ``data=`` alone as a URL-encoded form).
    """
    parts: list[tuple[str, Any]] = []
    for name, value in sendable.items():
        if name in manifest.file_fields:
            many = isinstance(value, list)
            for index, item in enumerate(value if many else [value]):
                where = f"{name}[{index}]" if many else name
                upload = read_file_field(item, where, manifest.properties[name], action=manifest.name)
                parts.append((f"{name}[]" if many else name, upload))
        else:
            parts.extend((part, (None, text)) for part, text in bracketed_pairs(name, value))
    return parts


def build_request(manifest: ActionManifest, inputs: dict[str, Any]) -> Request:
    """The request the manifest's binding makes of validated inputs (see the module docstring)."""
    http = manifest.http
    sendable = {k: v for k, v in inputs.items() if k not in manifest.pack_only_fields}
    path = http.path
    for name in http.path_params:
        path = path.replace("{" + name + "}", quote(_text(sendable.pop(name)), safe=":@"))
    params: list[tuple[str, str]] = []
    for name in http.query:
        value = sendable.pop(name, None)
        if value is not None:  # null means "not given" for a query parameter
            params.extend(bracketed_pairs(name, value))
    headers = dict(http.headers)
    for name, header in http.header_params.items():
        if name in sendable:
            value = sendable.pop(name)
            if value is not None:
                headers[header] = _header_text(name, value, manifest.name)
    stream = http.stream
    streaming = stream is not None and inputs.get(stream.flag) is True  # the flag may be a query field
    body = sendable if http.encoding == "json" else None
    parts = multipart_body(manifest, sendable) if http.encoding == "multipart" else None
    return Request(http.method, path, params or None, headers, body, parts or None, http.key == "admin", streaming)


def check_credentials(manifest: ActionManifest, integration: Integration) -> None:
    """An admin action needs the integration's Admin API key: a config error naming the field, before any call.

    An integration that sends no key at all (placement ``none``: a local server) needs none, and Azure has
    no Admin API: the provider's routing refuses those actions, saying so, rather than asking for a key.
    """
    if (manifest.http.key != "admin" or integration.auth.placement == AuthPlacement.none
            or integration.provider == Provider.azure):
        return
    if integration.admin_key is None:
        raise ConfigError(
            f"integration {integration.name!r}: admin_key is not set, and {manifest.name} calls "
            f"{manifest.http.path}, which takes an Admin API key (OpenAI's /organization endpoints refuse "
            "project keys). Set OPENAI_ADMIN_KEY, or store one with `openai-pack integrations add NAME "
            "--admin-key-env VAR --replace`", field="admin_key", integration=integration.name,
            action=manifest.name)
