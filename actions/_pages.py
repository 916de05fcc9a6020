"""``fetch_all``: every page of a list action, merged in order into one answer of the list's own shape.

A list action's manifest says how it pages (``http.pagination``, written by the generator):

- ``cursor`` (51 operations): ask again with ``after`` = the page's ``last_id`` (or, when the API leaves
  it out, the last item's ``id``) while ``has_more`` is true;
- ``page`` (the 11 usage and cost reports): ask again with ``page`` = the answer's ``next_page`` while it
  is set.

Each page is its own request through ``Call.send``, so the client retries a failed page by itself (a
429 on page 3 repeats page 3, never pages 1 and 2) and every page counts in the run's attempts and
request ids. The walk is bounded: at most ``max_items`` items (default ``DEFAULT_MAX_ITEMS``) and
``MAX_PAGES`` pages (``CallOptions.max_pages``), and a cursor the API hands out twice stops it with an
error instead of a loop.

The merged answer is the last page's, with every item in ``data`` (or the binding's ``items`` field).
When the walk stopped before the end (``max_items`` or the page cap), ``has_more`` stays true and the
cursor fields say where to go on: ``last_id`` is the last item returned; for page-style lists cut inside
a page, ``next_page`` is the token of that page (going on repeats its first items rather than skip any).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actions._manifest import Pagination
from actions._request import Request
from integration.client import ApiResponse
from integration.errors import ResponseShapeError

__all__ = ["DEFAULT_MAX_ITEMS", "MAX_PAGES", "fetch_pages"]

#: Items ``fetch_all`` returns at most when ``max_items`` is not given.
DEFAULT_MAX_ITEMS = 10_000
#: Pages one ``fetch_all`` asks for at most, whatever the page size: a server that never says "done" ends here.
MAX_PAGES = 500


def _next_cursor(pagination: Pagination, page: dict[str, Any], items: list[Any]) -> str | None:
    """Where the next page starts, or None at the end; a page that says "more" but gives no way on is an error."""
    if pagination.style == "page":
        token = page.get("next_page")
        if page.get("has_more") is False or not token:
            return None
        if not isinstance(token, str):
            raise ResponseShapeError(f"the API's next_page is {type(token).__name__}, not a string")
        return token
    if page.get("has_more") is not True:
        return None
    cursor = page.get("last_id")
    if not cursor and items and isinstance(items[-1], dict):
        cursor = items[-1].get("id")
    if not isinstance(cursor, str) or not cursor:
        raise ResponseShapeError("the API said has_more but gave neither last_id nor an id on the last item to "
                                 "continue from")
    return cursor


def fetch_pages(pagination: Pagination, first: Request, send: Callable[[Request], ApiResponse],
                as_object: Callable[[ApiResponse], dict[str, Any]], *, max_items: int | None = None,
                max_pages: int = MAX_PAGES) -> dict[str, Any]:
    """Walk the pages from ``first`` (see the module docstring); ``send`` retries each page on its own."""
    cap = DEFAULT_MAX_ITEMS if max_items is None else max_items
    collected: list[Any] = []
    request, page_token = first, None
    seen: set[str] = set()
    for _ in range(max(1, max_pages)):
        page = as_object(send(request))
        items = page.get(pagination.items)
        if not isinstance(items, list):
            raise ResponseShapeError(f"a page of the list has no {pagination.items!r} list")
        cursor = _next_cursor(pagination, page, items)
        room = cap - len(collected)
        collected.extend(items[:room])
        if len(items) > room or (len(items) == room and cursor is not None):
            cut_inside = len(items) > room
            return _merged(pagination, page, collected, more=True, resume=page_token if cut_inside else cursor)
        if cursor is None:
            return _merged(pagination, page, collected, more=False, resume=None)
        if cursor in seen:
            raise ResponseShapeError(f"the API handed out the cursor {cursor[:80]!r} twice; stopped rather than loop")
        seen.add(cursor)
        request, page_token = request.with_param(pagination.param, cursor), cursor
    return _merged(pagination, page, collected, more=True, resume=cursor)


def _merged(pagination: Pagination, last_page: dict[str, Any], items: list[Any], *, more: bool,
            resume: str | None) -> dict[str, Any]:
    merged = dict(last_page)
    merged[pagination.items] = items
    merged["has_more"] = more
    if pagination.style == "page":
        merged["next_page"] = resume if more else None
        return merged
    ids = [item.get("id") for item in items if isinstance(item, dict)]
    if "first_id" in last_page or "last_id" in last_page:
        merged["first_id"] = ids[0] if ids else None
        merged["last_id"] = ids[-1] if ids else None
    return merged
