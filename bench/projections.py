#!/usr/bin/env python
"""Backtest of the month-end projection (``costwarden.analytics.projection``).

    python bench/projections.py [--series 1000] [--seed 14]

Generates ``--series`` orgs' daily spend over two 30-day months: a base level (log-uniform,
$1 to $1,000 a day), a weekly pattern (weekends at 40-90 % of weekdays), a trend (-30 % to
+50 % over the two months), day-to-day noise (lognormal, sigma 0.15-0.45) and rare spikes
(1 % of days at 3-8x). For each org the projection made after 7, 14 and 21 complete days of
the second month (with the first month as history) is compared with its actual total:
prints the mean and median absolute percentage error and the share of actual totals inside
the 90 % interval.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from costwarden.analytics.projection import project_month  # noqa: E402

DAYS = 30


def series(rng: random.Random) -> list[Decimal]:
    base = math.exp(rng.uniform(0, math.log(1000)))
    weekend = rng.uniform(0.4, 0.9)
    trend = rng.uniform(-0.3, 0.5)
    sigma = rng.uniform(0.15, 0.45)
    out = []
    for day in range(2 * DAYS):
        level = base * (1 + trend * day / (2 * DAYS)) * (weekend if day % 7 in (5, 6) else 1)
        value = level * rng.lognormvariate(-sigma * sigma / 2, sigma)
        if rng.random() < 0.01:
            value *= rng.uniform(3, 8)
        out.append(Decimal(str(round(value, 6))))
    return out


def backtest(count: int, seed: int) -> list[tuple[int, float, float, float]]:
    """(cutoff day, mean APE %, median APE %, interval coverage %) per cutoff."""
    rng = random.Random(seed)
    all_series = [series(rng) for _ in range(count)]
    out = []
    for cutoff in (7, 14, 21):
        errors, inside = [], 0
        for s in all_series:
            history, month = s[:DAYS], s[DAYS:]
            actual = sum(month, Decimal(0))
            p = project_month(month[:cutoff], DAYS, history=history)
            errors.append(float(abs(p.projected - actual) / actual) * 100)
            inside += p.low <= actual <= p.high
        out.append(
            (cutoff, statistics.mean(errors), statistics.median(errors), 100 * inside / count)
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    table = Table(title=f"month-end projection backtest, {args.series} generated orgs")
    for column in ("after day", "MAPE", "median APE", "inside the 90 % interval"):
        table.add_column(column, justify="right")
    for cutoff, mape, median, coverage in backtest(args.series, args.seed):
        table.add_row(str(cutoff), f"{mape:.1f} %", f"{median:.1f} %", f"{coverage:.1f} %")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
