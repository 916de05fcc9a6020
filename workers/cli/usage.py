"""``openai-pack usage``: estimated spend summed from the run records, by integration, workflow, model or action.

The numbers are the pack's estimates (token counts from the API's answers times the price table
of ``workers/observe/prices.json``). ``--compare-org NAME`` asks the organization's own costs
(``GET /organization/costs``, an Admin key's integration) for the same period and prints both:
the invoice is the authority, and it also counts calls made outside the pack.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from integration.errors import InputError
from integration.redact import install_log_redaction
from workers.cli.output import console, emit

__all__ = ["parse_since", "register", "summarise"]

_DURATION = re.compile(r"^(\d{1,6})([dhm])$")
_UNITS = {"d": 86400, "h": 3600, "m": 60}
BY = ("integration", "workflow", "model", "action")
#: Pages of ``/organization/costs`` read at most (31 daily buckets each).
MAX_ORG_PAGES = 20


def parse_since(text: str, now: float | None = None) -> float:
    """``7d`` / ``24h`` / ``90m`` ago, or an ISO date or time (UTC unless it says otherwise): epoch seconds."""
    now = time.time() if now is None else now
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError([{"field": "--since", "reason": f"must be like 7d, 24h, 90m or an ISO date, got {value!r}"}]
                         ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _created(row: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(row.get("created")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _calls(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(action, cost) of every call a run record shows: single steps and fan-out items."""
    found = []
    for step in record.get("steps") or []:
        action = str(step.get("action") or "")
        if step.get("item_results") is not None:
            found.extend((action, item.get("cost")) for item in step["item_results"] if isinstance(item, dict))
        else:
            found.append((action, step.get("cost")))
    return [(action, cost) for action, cost in found if isinstance(cost, dict)]


def summarise(store: Any, since: float, by: str, *, page: int = 200) -> dict[str, Any]:
    """Walk runs newest first until one is older than ``since``; sum their calls' costs by ``by``."""
    groups: dict[str, dict[str, Any]] = {}
    runs = 0
    offset = 0
    while True:
        rows = store.list(page, offset)
        if not rows:
            break
        offset += len(rows)
        older = False
        for row in rows:
            if _created(row) < since:
                older = True
                break
            record = store.record(row["id"])
            if record is None:
                continue
            runs += 1
            for action, cost in _calls(record):
                key = {"integration": cost.get("integration"), "workflow": record.get("workflow"),
                       "model": cost.get("model"), "action": action}[by] or "(none)"
                group = groups.setdefault(str(key), {by: str(key), "calls": 0, "usd": 0.0, "unpriced": 0})
                group["calls"] += 1
                if cost.get("usd") is None:
                    group["unpriced"] += 1
                else:
                    group["usd"] = round(group["usd"] + float(cost["usd"]), 10)
        if older or len(rows) < page:
            break
    ordered = sorted(groups.values(), key=lambda g: (-g["usd"], g[by]))
    return {"since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "by": by, "runs": runs, "groups": ordered,
            "total": {"usd": round(sum(g["usd"] for g in ordered), 10),
                      "unpriced": sum(g["unpriced"] for g in ordered), "calls": sum(g["calls"] for g in ordered)}}


def organization_costs(integration: str, since: float) -> dict[str, Any]:
    """The organization's billed costs since ``since`` (``/organization/costs``, daily buckets, paged)."""
    import actions

    total, currency, pages, cursor = 0.0, "usd", 0, None
    while pages < MAX_ORG_PAGES:
        inputs: dict[str, Any] = {"start_time": int(since), "bucket_width": "1d", "limit": 31}
        if cursor:
            inputs["page"] = cursor
        answer = actions.run("usage_costs", inputs, integration)
        pages += 1
        for bucket in answer.get("data") or []:
            for result in (bucket or {}).get("results") or []:
                amount = (result or {}).get("amount") or {}
                if isinstance(amount.get("value"), int | float):
                    total += float(amount["value"])
                    currency = str(amount.get("currency") or currency)
        cursor = answer.get("next_page")
        if not answer.get("has_more") or not cursor:
            break
    return {"integration": integration, "usd": round(total, 6), "currency": currency, "pages": pages}


def usage(
    since: Annotated[str, typer.Option("--since", help="7d, 24h, 90m, or an ISO date/time (UTC).")] = "30d",
    by: Annotated[str, typer.Option("--by", help="integration, workflow, model or action.")] = "integration",
    compare_org: Annotated[str | None, typer.Option("--compare-org", help="An integration holding an Admin key: "
                                                    "also show the organization's /organization/costs.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Estimated spend from the run records (tokens x the price table), grouped; optionally vs. the invoice."""
    install_log_redaction()
    if by not in BY:
        raise InputError([{"field": "--by", "reason": f"must be one of {', '.join(BY)}, got {by!r}"}])
    start = parse_since(since)
    from workers.app import engine

    report = summarise(engine().store, start, by)
    if compare_org:
        report["organization"] = organization_costs(compare_org, start)
    if as_json:
        emit(report)
        return
    table = Table(by, "calls", "estimated USD", "unpriced calls")
    for group in report["groups"]:
        table.add_row(group[by], str(group["calls"]), f"{group['usd']:.6f}", str(group["unpriced"] or ""))
    console.print(f"since {report['since']}: {report['runs']} runs")
    console.print(table)
    total = report["total"]
    console.print(f"total: {total['calls']} calls, ${total['usd']:.6f} estimated"
                  + (f", {total['unpriced']} calls unpriced" if total["unpriced"] else ""))
    if compare_org:
        org = report["organization"]
        console.print(f"organization costs ({org['integration']}): {org['usd']:.6f} {org['currency']}")


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
