"""The policy's campaign history with the service's own decisions in it: a view of a data directory whose
`campaigns.parquet` also holds the decision log's decisions (features.campaigns), so that the policy job,
its features (contacts, last action) and its labels all read one history."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.campaigns import HistoryCounts, campaign_history
from features.datadir import resolve_data_dir

CAMPAIGNS = "campaigns.parquet"


@contextlib.contextmanager
def with_logged_decisions(data_dir: Path, logged: pd.DataFrame) -> Iterator[tuple[Path, HistoryCounts]]:
    """A temporary data directory: every file of `data_dir` linked, `campaigns.parquet` replaced by the
    history of the file and the `logged` decisions (user_id, ts, action, propensity). Nothing in `data_dir`
    changes."""
    data_dir = resolve_data_dir(Path(data_dir))  # an ingested directory: its current version's files
    path = data_dir / CAMPAIGNS
    campaigns = pd.read_parquet(path) if path.exists() else None
    history, counts = campaign_history(campaigns, logged)
    with tempfile.TemporaryDirectory(prefix="clm-history-") as tmp:
        view = Path(tmp)
        for item in data_dir.iterdir():
            if item.name != CAMPAIGNS:
                (view / item.name).symlink_to(item.resolve())
        schema = pa.schema([("user_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                            ("action", pa.string()), ("propensity", pa.float64())])  # fmt: skip
        pq.write_table(pa.Table.from_pandas(history, schema=schema, preserve_index=False), view / CAMPAIGNS)
        yield view, counts
