"""Text that came from outside (a webhook body) must be valid Unicode before it is stored.

A lone UTF-16 surrogate (``"\\ud800"`` as a JSON escape) is a Python ``str`` but not text: saved
into a run record, it breaks every reader that encodes the record as UTF-8 (the HTTP answer,
``runs show --json``). The webhook refuses it at the door, naming where it was. (Schedules files
need no check here: the workflow YAML loader refuses such escapes itself.)
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["lone_surrogate"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any, root: str = "the value") -> str | None:
    """Where the first lone surrogate in a JSON-like value is (``"meta.tags[1] at character 3 (\\udc00)"``),
    or None; ``root`` names the value itself (``"a key of the body"``).

    A loop, not recursion: the value may be nested as deep as its parser allowed.
    """
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return f"{where or root} at character {found.start()} (\\u{ord(found.group()):04x})"
        elif isinstance(item, dict):
            for name, child in item.items():
                found = _SURROGATE.search(str(name))
                if found:
                    return f"a key of {where or root} (\\u{ord(found.group()):04x})"
                pending.append((child, f"{where}.{name}" if where else str(name)))
        elif isinstance(item, list | tuple):
            pending.extend((child, f"{where}[{index}]") for index, child in enumerate(item))
    return None
