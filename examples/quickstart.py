"""autoflow quickstart: a small order-report workflow on the embedded default.

    python examples/quickstart.py

No server to install: runs are stored in SQLite under AUTOFLOW_HOME (default
~/.autoflow) and nodes run on worker threads inside this process.
"""

from __future__ import annotations

import random

import autoflow as af


@af.node
def load_orders(day: str, count: int) -> list[dict[str, object]]:
    """Pretend to read a day's orders from somewhere."""
    rng = random.Random(day)
    return [
        {"id": f"{day}-{i}", "region": rng.choice(["eu", "us", "apac"]), "amount": round(rng.uniform(5, 500), 2)}
        for i in range(count)
    ]


@af.node(retries=3, backoff=af.Backoff(base=0.2, factor=2.0, max=2.0))
def fetch_rates(ctx: af.Context) -> dict[str, float]:
    """A flaky call to a currency service: fails on the first attempt, then succeeds."""
    if ctx.attempt == 1:
        raise ConnectionError("rates service timed out")
    ctx.log.info("rates fetched", data={"attempt": ctx.attempt})
    return {"eu": 1.08, "us": 1.0, "apac": 0.0067}


@af.node
def totals_by_region(orders: list[dict[str, object]], rates: dict[str, float], ctx: af.Context) -> dict[str, float]:
    totals: dict[str, float] = {}
    for order in orders:
        region = str(order["region"])
        totals[region] = totals.get(region, 0.0) + float(order["amount"]) * rates[region]  # type: ignore[arg-type]
    ctx.log.info("totals computed", data={"orders": len(orders)})
    return {region: round(value, 2) for region, value in sorted(totals.items())}


@af.node
def biggest(orders: list[dict[str, object]], top: int = 3) -> list[str]:
    ranked = sorted(orders, key=lambda o: float(o["amount"]), reverse=True)  # type: ignore[arg-type]
    return [str(o["id"]) for o in ranked[:top]]


@af.node
def report(totals: dict[str, float], top: list[str], day: str) -> dict[str, object]:
    return {"day": day, "total_usd": round(sum(totals.values()), 2), "by_region": totals, "top_orders": top}


@af.workflow
def daily_report(day: str = "2026-11-25", count: int = 200):
    """Load orders, fetch rates (with retries) in parallel, aggregate, report."""
    orders = load_orders(day, count)
    rates = fetch_rates()
    return report(totals_by_region(orders, rates), biggest(orders), day)


def main() -> None:
    print(daily_report)  # <Workflow daily_report nodes=5 edges=5>
    with af.Client() as client:
        run = client.execute(daily_report, day="2026-11-25")
        print(f"submitted {run.id}; waiting...")
        result = run.result(timeout=60)
        print(run)
        for entry in run.logs():
            print("  ", entry.format())
        print("result:", result)


if __name__ == "__main__":
    main()
