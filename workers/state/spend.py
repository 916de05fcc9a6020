"""Spend caps: what each integration has spent today and this month, shared by every worker.

An MSP bills per customer, so an integration may carry ``spend_caps`` (``daily_usd``,
``monthly_usd``). Before a call, its estimated upper-bound cost is *reserved* with one atomic
increment per period in the run store (Redis, or the embedded SQLite file, like the rate budget):
if the total would pass the cap the reservation is taken back and the call refused with
``BudgetExceededError``, naming the cap. After the call the reservation is settled to the actual
cost (from the price table); a call that failed before it was billed gives it back, and one whose
outcome is unknown keeps it (it may have been billed). Sums are kept in nano-USD integers, so
concurrent workers never lose an update to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from integration.errors import BudgetExceededError
from integration.model import Integration
from workers.state.kv import KV

__all__ = ["SPEND_PREFIX", "Reservation", "SpendCaps", "spent"]

SPEND_PREFIX = "opk:spend:"
NANO = 1_000_000_000


def _periods(now: datetime | None = None) -> dict[str, str]:
    now = now or datetime.now(UTC)
    return {"daily": now.strftime("%Y-%m-%d"), "monthly": now.strftime("%Y-%m")}


def _key(integration: str, cap: str, period: str) -> str:
    return f"{SPEND_PREFIX}{integration}:{cap}:{period}"


@dataclass
class Reservation:
    """What one call holds against its integration's caps until it is settled or released."""

    keys: list[str] = field(default_factory=list)
    amount: int = 0  # nano-USD
    settled: bool = False


def spent(kv: KV, integration: str, cap: str = "daily", now: datetime | None = None) -> float:
    """USD spent (and reserved) by ``integration`` in the current ``daily`` or ``monthly`` period."""
    raw = kv.get(_key(integration, cap, _periods(now)[cap]))
    return int(raw or 0) / NANO


class SpendCaps:
    """Reserve, settle and release against the caps of ``Integration.spend_caps``."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    def reserve(self, integration: Integration, estimate_usd: float | None, *, reason: str | None = None,
                what: str = "this call") -> Reservation:
        """Hold ``estimate_usd`` against every cap, or raise ``BudgetExceededError`` (nothing held).

        ``estimate_usd`` None means the cost cannot be estimated (a model missing from the price
        table): with a cap set that call is refused, since its spend could not be counted either.
        """
        caps = integration.spend_caps
        limits = {"daily": caps.daily_usd, "monthly": caps.monthly_usd}
        held = Reservation()
        if not any(limits.values()):
            return held
        if estimate_usd is None:
            cap = next(name for name, value in limits.items() if value)
            raise BudgetExceededError(
                f"integration {integration.name!r} has a {cap} spend cap and {what} cannot be priced "
                f"({reason or 'unknown cost'}); not called", integration=integration.name, cap=cap,
                cap_usd=limits[cap], called=False)
        amount = max(0, round(estimate_usd * NANO))
        held.amount = amount
        periods = _periods()
        for cap, limit in limits.items():
            if not limit:
                continue
            key = _key(integration.name, cap, periods[cap])
            total = self.kv.incr(key, amount)
            if total > round(limit * NANO):
                self.kv.incr(key, -amount)
                self.release(held)
                before = (total - amount) / NANO
                raise BudgetExceededError(
                    f"integration {integration.name!r}: {what} (estimated up to ${estimate_usd:.6f}) would cross "
                    f"its {cap} spend cap of ${limit:g} (${before:.6f} spent or held this period); not called",
                    integration=integration.name, cap=cap, cap_usd=limit, spent_usd=round(before, 9),
                    estimate_usd=estimate_usd, called=False)
            held.keys.append(key)
        return held

    def settle(self, held: Reservation, actual_usd: float | None) -> None:
        """Replace the held estimate by the actual cost (kept as is when the actual cost is unknown)."""
        if held.settled or not held.keys:
            return
        held.settled = True
        if actual_usd is None:
            return
        delta = round(actual_usd * NANO) - held.amount
        if delta:
            for key in held.keys:
                self.kv.incr(key, delta)

    def release(self, held: Reservation) -> None:
        """The call was not billed (refused, or failed before the API took it): give the estimate back."""
        if held.settled:
            return
        held.settled = True
        for key in held.keys:
            self.kv.incr(key, -held.amount)
