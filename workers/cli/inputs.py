"""Options that carry values (``--input '{…}'`` or ``--input @file.json``), read strictly before use.

The parsing itself is the pack's one reader of outside JSON, ``actions.parse_json_text`` and
``actions.read_text_file`` (also used by webhooks and ``openai-pack run``): a file that cannot be
read or is not UTF-8, text that is not JSON, ``NaN``/``Infinity``, lone surrogates and nesting
deeper than ``actions.MAX_DEPTH`` are each an ``InputError`` naming the option, never a traceback.
"""

from __future__ import annotations

from typing import Any

import actions
from integration.errors import InputError

__all__ = ["read_json_object"]


def read_json_object(raw: str | None, field: str) -> dict[str, Any]:
    """An option holding a JSON object inline or as ``@file``; absent means ``{}``."""
    if raw is None:
        return {}
    text = actions.read_text_file(raw[1:], field) if raw.startswith("@") else raw
    value = actions.parse_json_text(text, field)
    if not isinstance(value, dict):
        raise InputError([{"field": field, "reason": "must be a JSON object of field values ({\"name\": value, …})"}])
    return value
