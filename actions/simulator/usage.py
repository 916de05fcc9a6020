"""The usage and cost reports (``/organization/usage/*``, ``/organization/costs``): time buckets, paged the
page-token way (``page`` in, ``next_page`` out), so ``fetch_all``'s page style is tested against a server that
really pages.

Buckets are ``bucket_width`` wide (1m, 1h, 1d; default 1d), on the width's boundaries, from the one holding
``start_time`` to ``end_time`` (default now),
``limit`` per page (the API's defaults per width), at most ``MAX_BUCKETS`` in all. Each bucket holds the results of
the first bucket of the action's example answer (the spec's own example figures), so sums over a period are
predictable. A page token it did not issue is a 400 naming ``page``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from actions.simulator.behaviours import Call, Context, Reply, behaviour
from actions.simulator.state import error_body

__all__ = ["MAX_BUCKETS", "USAGE_OPERATIONS"]

USAGE_OPERATIONS = ("usage-costs", "usage-audio-speeches", "usage-audio-transcriptions",
                    "usage-code-interpreter-sessions", "usage-completions", "usage-embeddings",
                    "usage-file-search-calls", "usage-images", "usage-moderations", "usage-vector-stores",
                    "usage-web-search-calls")
#: Buckets one report holds at most (a start_time of 0 would otherwise mean tens of thousands of days).
MAX_BUCKETS = 1_000
_WIDTHS = {"1m": (60, 60, 1440), "1h": (3600, 24, 168), "1d": (86400, 7, 180)}  # seconds, default, max limit
_TOKEN_PREFIX = "page_sim_"


def _invalid(message: str, param: str) -> Reply:
    return Reply(400, error_body(message, "invalid_request_error", param))


def _integer(call: Call, name: str) -> int | None | Reply:
    text = call.query.get(name)
    if text is None or text == "":
        return None
    if not text.lstrip("-").isdigit():
        return _invalid(f"Invalid value for '{name}': expected an integer, got {text[:40]!r}.", name)
    return int(text)


@cache
def _example_results(operation_id: str) -> tuple[Any, ...]:
    """The results of the first bucket of the example answer of the action bound to ``operation_id``."""
    from actions import registry

    for manifest in registry().values():
        if manifest.openapi.operationId == operation_id and manifest.examples:
            buckets = manifest.examples[0].output.get("data") or [{}]
            results = buckets[0].get("results") if isinstance(buckets[0], dict) else None
            return tuple(results) if isinstance(results, list) else ()
    return ()


def usage_report(operation_id: str) -> Callable[[Context, Call], Any]:
    """The behaviour of one report: its buckets carry its example's results."""
    def answer(_context: Context, call: Call) -> Any:
        page = _page(call)
        if isinstance(page, Reply):
            return page
        for bucket in page["data"]:
            bucket["results"] = copy.deepcopy(list(_example_results(operation_id)))
        return page
    return answer


def _page(call: Call) -> dict[str, Any] | Reply:
    """One page of empty buckets, or the 400 naming the bad query parameter."""
    start, end, limit = _integer(call, "start_time"), _integer(call, "end_time"), _integer(call, "limit")
    for value in (start, end, limit):
        if isinstance(value, Reply):
            return value
    if start is None:
        return _invalid("Missing required parameter: 'start_time'.", "start_time")
    width_name = call.query.get("bucket_width") or "1d"
    if width_name not in _WIDTHS:
        return _invalid(f"Invalid value for 'bucket_width': {width_name[:20]!r}.", "bucket_width")
    width, default_limit, max_limit = _WIDTHS[width_name]
    limit = default_limit if limit is None else limit
    if not 1 <= limit <= max_limit:
        return _invalid(f"Invalid value for 'limit': must be between 1 and {max_limit}.", "limit")
    end = int(time.time()) if end is None else end
    first = int(start) // width * width  # buckets sit on the width's boundaries (UTC midnight for 1d), as the API's do
    starts = list(range(first, max(first, int(end)), width))[:MAX_BUCKETS]
    token = call.query.get("page")
    offset = 0
    if token:
        number = token.removeprefix(_TOKEN_PREFIX)
        if not token.startswith(_TOKEN_PREFIX) or not number.isdigit() or int(number) > len(starts):
            return _invalid("Invalid value for 'page': not a page token this report issued.", "page")
        offset = int(number)
    chosen = starts[offset:offset + limit]
    more = offset + limit < len(starts)
    return {"object": "page",
            "data": [{"object": "bucket", "start_time": s, "end_time": s + width, "results": []} for s in chosen],
            "has_more": more, "next_page": f"{_TOKEN_PREFIX}{offset + limit}" if more else None}


for _operation_id in USAGE_OPERATIONS:
    behaviour(_operation_id)(usage_report(_operation_id))
