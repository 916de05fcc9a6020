"""Create Image: the API returns URLs (that expire within the hour) or base64, and workflows
often need a file; ``save_to`` writes each image to that directory and adds its ``path``.

Files are written whole or not at all (temporary name, then rename), never overwrite an existing
file, and URL downloads never carry the API key (the images live on another host).
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

from actions._binding import Call
from integration.client import download
from integration.errors import InputError

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


def _free_path(directory: Path, stem: str, ext: str) -> Path:
    candidate = directory / f"{stem}.{ext}"
    counter = 1
    while candidate.exists():
        candidate = directory / f"{stem}-{counter}.{ext}"
        counter += 1
    return candidate


def _write_atomically(directory: Path, stem: str, ext: str, content: bytes) -> Path:
    handle, temp_name = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=f".{ext}")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
        target = _free_path(directory, stem, ext)
        os.replace(temp_name, target)
        return target
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def save_images(output: dict[str, Any], directory: Path, prefix: str, default_ext: str) -> None:
    """Write every image of ``output['data']`` to ``directory``, adding each one's ``path``."""
    for index, item in enumerate(output.get("data") or []):
        if item.get("b64_json"):
            content, ext = base64.b64decode(item["b64_json"]), default_ext
        elif item.get("url"):
            content, content_type = download(item["url"])
            ext = _EXTENSIONS.get(content_type.split(";")[0].strip(), default_ext)
        else:
            continue
        stem = f"{prefix}{output.get('created', 'image')}-{index}"
        item["path"] = str(_write_atomically(directory, stem, ext, content).resolve())


def run(call: Call) -> dict[str, Any]:
    save_to = call.inputs.get("save_to")
    directory = Path(save_to).expanduser() if save_to else None
    if directory is not None:
        # Fail before the paid call if the images could not be kept.
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError([{"field": "save_to", "reason": f"cannot create directory {str(directory)!r}: "
                                                             f"{exc.strerror}"}], action=call.manifest.name) from None
        if not os.access(directory, os.W_OK):
            raise InputError([{"field": "save_to", "reason": f"directory {str(directory)!r} is not writable"}],
                             action=call.manifest.name)
    output = call.default()
    if directory is not None:
        save_images(output, directory, call.inputs.get("file_prefix", ""),
                    call.inputs.get("output_format", "png"))
    return output
