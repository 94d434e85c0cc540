"""Campaign history from two sources: the ingested `campaigns.parquet` and the decisions the service logged
(the decision log, with the propensity each was chosen with), each contact counted once."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

CAMPAIGN_KEY = ("user_id", "day", "action")


@dataclass(frozen=True)
class HistoryCounts:
    from_file: int  # rows of the ingested file
    from_log: int  # logged decisions read
    repeated: int  # logged decisions of a user already decided that day (a repeated request): left out
    duplicates: int  # logged contacts the file holds too (same user, day and action): counted once
    rows: int  # campaign rows in the history


def campaign_history(
    campaigns: pd.DataFrame | None, logged: pd.DataFrame
) -> tuple[pd.DataFrame, HistoryCounts]:
    """`campaigns` (user_id, ts, action, propensity; None without a file) and `logged` decisions (user_id, ts,
    action, propensity) → one campaign table (user_id, ts, action, propensity). A user's logged decisions of
    one day are one decision — the first, which is what was acted on; a logged decision the file also holds
    (same user, day and action, e.g. the CRM's export of what it sent) is one row, with the logged propensity."""
    columns = ["user_id", "ts", "action", "propensity"]
    file_rows = pd.DataFrame(columns=columns) if campaigns is None else campaigns[columns].copy()
    log_rows = logged[columns].copy()
    for frame in (file_rows, log_rows):
        frame["user_id"] = frame["user_id"].astype(str)
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame["day"] = frame["ts"].dt.floor("D")
    first = log_rows.sort_values(["ts"], kind="stable").drop_duplicates(["user_id", "day"])
    keys = pd.MultiIndex.from_frame(file_rows[list(CAMPAIGN_KEY)])
    in_file = pd.MultiIndex.from_frame(first[list(CAMPAIGN_KEY)]).isin(keys)
    kept_file = file_rows[~keys.isin(pd.MultiIndex.from_frame(first.loc[in_file, list(CAMPAIGN_KEY)]))]
    history = pd.concat([kept_file, first], ignore_index=True).sort_values(["ts", "user_id"], kind="stable")
    counts = HistoryCounts(
        len(file_rows), len(log_rows), len(log_rows) - len(first), int(in_file.sum()), len(history)
    )
    return history[columns].reset_index(drop=True), counts
