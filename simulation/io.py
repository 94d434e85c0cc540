"""Write a simulated world as the canonical data directory (the same files `clm ingest` writes) plus
`truth/`. Everything goes to a temporary directory first and is moved into place at the end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from simulation.engine import SimulatedWorld, simulate_world
from simulation.truth import MarginParams

CANONICAL_FILES = ("events", "users", "subscriptions", "campaigns")
TRUTH_FILES = ("outcomes", "stages", "traits")
EFFECTS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("cutoff", pa.date32()),
        ("action", pa.string()),
        ("delta_p_churn", pa.float64()),
        ("delta_p_upgrade", pa.float64()),
    ]
)

MARGIN_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("cutoff", pa.date32()),
        ("action", pa.string()),
        ("incremental_margin", pa.float64()),
        ("baseline_margin", pa.float64()),
    ]
)


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd", row_group_size=1_000_000)


def simulate_to_directory(
    out: Path,
    n_users: int,
    days: int,
    seed: int,
    start: dt.date,
    **options: Any,
) -> SimulatedWorld:
    """Run the simulator and write `out/{events,users,subscriptions,campaigns}.parquet` and
    `out/truth/{outcomes,effects,margin,stages,traits}.parquet` plus `out/truth/manifest.json`.
    `margin.parquet`: per user, truth cutoff and action (`no_action` included, increment exactly 0) the
    true expected discounted margin over the value horizon without a contact (`baseline_margin`) and the
    action's increment on it (`incremental_margin`), contact cost not subtracted. `options` are those of
    `simulate_world` (truth_cutoffs, horizon_days, params, progress, value_truth) but its sinks."""
    value_truth = options.pop("value_truth", None) or MarginParams()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    try:
        (staging / "truth").mkdir()
        with (
            pq.ParquetWriter(
                staging / "truth" / "effects.parquet", EFFECTS_SCHEMA, compression="zstd"
            ) as writer,
            pq.ParquetWriter(
                staging / "truth" / "margin.parquet", MARGIN_SCHEMA, compression="zstd"
            ) as margins,
        ):
            world = simulate_world(
                n_users,
                days,
                seed,
                start,
                on_effects=lambda table: writer.write_table(table.cast(EFFECTS_SCHEMA)),
                on_margins=lambda table: margins.write_table(table.cast(MARGIN_SCHEMA)),
                value_truth=value_truth,
                **options,
            )
        world.manifest["value_truth"] = dataclasses.asdict(value_truth)
        for name in CANONICAL_FILES:
            _write(getattr(world, name), staging / f"{name}.parquet")
        for name in TRUTH_FILES:
            _write(getattr(world, name), staging / "truth" / f"{name}.parquet")
        (staging / "truth" / "manifest.json").write_text(
            json.dumps(world.manifest, indent=2, sort_keys=True) + "\n"
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return world
