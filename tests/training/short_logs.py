"""Small generated exports of the kind people bring: a retail purchase log (purchases only, from a
buy-till-you-die process with known parameters) and a SaaS account log (logins and subscriptions, users
without signup dates). Plain CSV with the canonical column names, as `clm ingest` reads them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd


def purchase_log(
    n_users: int, days: int, *, seed: int, start: dt.date = dt.date(2025, 1, 1), arrival_share: float = 0.7
) -> pd.DataFrame:
    """Purchases of customers who arrive uniformly over the first `arrival_share` of the period, buy at a
    gamma-distributed rate (mean one purchase every ~12 days) and drop out after each purchase with a
    beta-distributed probability (BG/NBD). Columns: user_id, ts, event_type, amount."""
    rng = np.random.default_rng(seed)
    origin = pd.Timestamp(start, tz="UTC")
    rows: list[tuple[str, pd.Timestamp, float]] = []
    for i in range(n_users):
        rate = rng.gamma(shape=1.5, scale=1 / 18)  # purchases per day
        dropout = rng.beta(1.0, 5.0)
        t = rng.uniform(0, days * arrival_share)
        spend = rng.lognormal(3.0, 0.6)
        while t < days:
            rows.append(
                (f"c{i:05d}", origin + pd.Timedelta(days=float(t)), round(spend * rng.lognormal(0, 0.3), 2))
            )
            if rng.random() < dropout:
                break
            t += rng.exponential(1 / rate)
    frame = pd.DataFrame(rows, columns=["user_id", "ts", "amount"])
    frame.insert(2, "event_type", "purchase")
    return frame.sort_values(["ts", "user_id"]).reset_index(drop=True)


def saas_log(
    n_users: int, days: int, *, seed: int, start: dt.date = dt.date(2025, 1, 1)
) -> dict[str, pd.DataFrame]:
    """Accounts that subscribe on arrival, log in every few days while engaged, and cancel at a hazard
    that rises as their engagement fades. Returns events (login, cancel), subscriptions and users (no
    signup_ts column)."""
    rng = np.random.default_rng(seed)
    origin = pd.Timestamp(start, tz="UTC")
    events, subscriptions, users = [], [], []
    for i in range(n_users):
        user = f"a{i:05d}"
        arrival = rng.uniform(0, days * 0.7)
        gap = rng.gamma(2.0, 2.0)  # mean days between logins
        fade = rng.uniform(0.0, 0.03)  # how fast the gap grows
        t, end = arrival, None
        plan = rng.choice(["basic", "pro"], p=[0.7, 0.3])
        while t < days:
            events.append((user, origin + pd.Timedelta(days=float(t)), "login"))
            if rng.random() < 0.01 + 0.02 * gap / 10:
                end = t + rng.uniform(0, 2)
                if end < days:
                    events.append((user, origin + pd.Timedelta(days=float(end)), "cancel"))
                break
            gap *= 1 + fade * rng.exponential(3.0)
            t += rng.exponential(gap)
        subscriptions.append(
            (user, plan, origin + pd.Timedelta(days=float(arrival)),
             origin + pd.Timedelta(days=float(end)) if end is not None and end < days else pd.NaT,
             29.0 if plan == "basic" else 99.0)
        )  # fmt: skip
        users.append((user, plan))
    return {
        "events": pd.DataFrame(events, columns=["user_id", "ts", "event_type"]).sort_values("ts"),
        "subscriptions": pd.DataFrame(subscriptions, columns=["user_id", "plan", "start", "end", "mrr"]),
        "users": pd.DataFrame(users, columns=["user_id", "plan"]),
    }


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index=False)
    return path
