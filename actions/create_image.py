"""Create Image: the API returns URLs (that expire within the hour) or base64, and workflows
often need a file; ``save_to`` writes each image to that directory and adds its ``path``.

Files are written whole or not at all and never overwrite an existing file (``actions/_outputs.py``,
shared with every action that saves bytes), and URL downloads never carry the API key (the images live on another host).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from actions._binding import Call
from actions._outputs import prepare_directory, save_in_directory
from integration.client import download

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


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
        item["path"] = str(save_in_directory(directory, stem, ext, [content]).resolve())


def run(call: Call) -> dict[str, Any]:
    save_to = call.inputs.get("save_to")
    # Fail before the paid call if the images could not be kept.
    directory = prepare_directory(save_to, call.manifest.name) if save_to else None
    output = call.default()
    if directory is not None:
        save_images(output, directory, call.inputs.get("file_prefix", ""),
                    call.inputs.get("output_format", "png"))
    return output
