"""Decision throughput: `models.policy.decide` (stage rules, CLV, uplift for every action and outcome,
arbitration with the contact policy) on registry-shaped rows, against its plain floor — the bare LightGBM
predictions of the same uplift boosters on the same matrix — in one process; plus budget mode.

Usage: python benchmarks/policy.py [--rows 200000] [--repeats 3]
Prints medians; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
import pandas as pd

from clm.config import load_config
from features.registry import FeatureParams, build_registry, feature_names, registry_version
from models.arbitration import ELIGIBLE, plan_within_budget
from models.catalog import NO_ACTION
from models.frame import category_lists
from models.policy import PolicyBundle, decide
from training.policy import fit_uplift, policy_parts


def synthetic_rows(rows: int, seed: int = 0) -> pd.DataFrame:
    """Registry-shaped rows with plausible ranges (days, counts, revenue, plans, contacts)."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for feature in build_registry():
        if feature.dtype == "category":
            choices = list(feature.categories) or ["free", "basic", "pro"]
            if feature.name == "current_plan":
                choices = ["free", "basic", "pro"]
            data[feature.name] = rng.choice(choices, rows)
        elif feature.unit == "days":
            data[feature.name] = rng.exponential(20.0, rows)
        elif feature.unit == "currency":
            data[feature.name] = rng.exponential(15.0, rows) * (rng.random(rows) < 0.5)
        else:
            data[feature.name] = rng.poisson(3.0, rows).astype(float)
    frame = pd.DataFrame(data)
    frame["last_action"] = np.where(rng.random(rows) < 0.2, "recommendation", None)
    return frame


def logged(frame: pd.DataFrame, actions: list[str], seed: int = 1) -> pd.DataFrame:
    """A randomised campaign log over the rows: 80 % holdouts, outcomes with a small effect per action."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    treated = rng.random(n) < 0.2
    action = np.where(treated, rng.choice(actions, n), NO_ACTION)
    base = 1 / (1 + np.exp(-(frame["days_since_last_event"].to_numpy() / 20 - 2)))
    churn = rng.random(n) < np.clip(base - 0.03 * treated, 0, 1)
    upgrade = rng.random(n) < 0.03 + 0.01 * treated
    return frame.assign(action=action, propensity=np.where(treated, 0.2 / len(actions), 0.8),
                        churn=churn.astype(float), upgrade=upgrade.astype(float))  # fmt: skip


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--train-rows", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = load_config()
    parts = policy_parts(config)
    registry = build_registry(FeatureParams.from_config(config.features))
    names = feature_names(registry)
    history = logged(synthetic_rows(args.train_rows, seed=2), [a.name for a in parts["catalog"]])
    categories = category_lists(registry, history)
    started = time.perf_counter()
    uplift = fit_uplift(history, parts, names, categories)
    fit_seconds = time.perf_counter() - started
    policy = PolicyBundle(
        name="bench", catalog=parts["catalog"], contact=parts["contact"], stages_config=config.stages,
        value=parts["value"], uplift=uplift, feature_names=names, feature_version=registry_version(registry),
    )  # fmt: skip
    frame = synthetic_rows(args.rows)
    rng = np.random.default_rng(0)
    p_churn, p_upgrade = rng.random(args.rows) * 0.4, rng.random(args.rows) * 0.1

    ours = median_seconds(lambda: decide(frame, p_churn, p_upgrade, policy), args.repeats)
    matrix = uplift.encode(frame)
    boosters = list(uplift.boosters_.values())
    floor = median_seconds(lambda: [b.predict(matrix) for b in boosters], args.repeats)
    encode = median_seconds(lambda: uplift.encode(frame), args.repeats)
    one = frame.head(1)
    single = median_seconds(lambda: decide(one, p_churn[:1], p_upgrade[:1], policy), max(args.repeats, 50))

    decisions = decide(frame, p_churn, p_upgrade, policy)
    arb = decisions.arbitration
    costs = np.array([a.cost for a in policy.catalog])
    unconstrained = float(np.where(arb.greedy >= 0, costs[np.clip(arb.greedy, 0, None)], 0).sum())
    budget = {}
    for method in ("greedy", "lagrangian"):
        plan = None

        def run(method: str = method) -> None:
            nonlocal plan
            plan = plan_within_budget(
                arb.value, arb.status == ELIGIBLE, costs, 0.3 * unconstrained, method=method
            )

        budget[method] = (median_seconds(run, args.repeats), plan)

    print(f"decide() on {args.rows:,} rows, {len(policy.catalog)} actions × 2 outcomes, "
          f"{len(boosters)} uplift boosters (fit on {args.train_rows:,} logged rows in {fit_seconds:.1f} s)")  # fmt: skip
    print(
        f"  ours (stages + CLV + uplift + arbitration): {ours:.2f} s median = {args.rows / ours:,.0f} users/s"
    )
    print(f"  floor (bare booster.predict of the same boosters): {floor:.2f} s median")
    print(f"  ratio ours / floor: {ours / floor:.2f}×  (of which model-matrix encoding {encode:.2f} s)")
    print(f"  one row through decide(): {single * 1000:.1f} ms median")
    for method, (seconds, plan) in budget.items():
        print(f"  budget mode ({method}, 30 % of the unconstrained spend): {seconds:.2f} s median; "
              f"value {plan.total_value:,.0f} of {plan.unconstrained_value:,.0f} unconstrained, "
              f"{plan.contacts:,} contacts")  # fmt: skip


if __name__ == "__main__":
    main()
