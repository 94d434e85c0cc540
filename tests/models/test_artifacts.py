"""Model artifacts are verified before they can hurt: a checksum manifest written with every bundle and
checked at load (a changed file is refused naming it, before LightGBM reads it), and a trial load in a
throw-away process that turns a native crash (a truncated booster segfaults LightGBM) into a refusal.

Every load of a damaged file here runs in a subprocess: without these guards it would kill pytest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from models.artifacts import (
    ArtifactRefused,
    manifest_digest,
    probe_in_subprocess,
    verify_manifest,
    write_manifest,
)
from models.bundle import BOOSTER_FILE, META_FILE, ModelBundle, load_bundle, save_bundle
from models.propensity import Calibrator

ROOT = Path(__file__).resolve().parents[2]
N_FEATURES = 40


@pytest.fixture(scope="module")
def saved_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose booster is big enough (~0.5 MB) that a truncated copy crashes LightGBM's parser."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, N_FEATURES))
    y = (x[:, 0] + rng.normal(size=3000) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=150)
    bundle = ModelBundle(
        name="clm-churn", target="churn", booster=booster, calibrator=Calibrator(),
        feature_names=[f"f{i}" for i in range(N_FEATURES)], categories={}, feature_version="v1", horizon_days=30,
    )  # fmt: skip
    return save_bundle(bundle, tmp_path_factory.mktemp("bundle") / "bundle")


def damaged_copy(bundle: Path, into: Path, *, reseal: bool) -> Path:
    """The bundle with its booster cut to a third; `reseal` rewrites the manifest over the damaged file
    (a file damaged before it was registered, or a bundle saved before manifests existed)."""
    copy = into / "bundle"
    copy.mkdir()
    for file in bundle.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    text = (bundle / BOOSTER_FILE).read_bytes()
    (copy / BOOSTER_FILE).write_bytes(text[: len(text) // 3])
    if reseal:
        write_manifest(copy)
    return copy


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_manifest_round_trips_and_names_what_changed(saved_bundle: Path, tmp_path: Path) -> None:
    assert json.loads((saved_bundle / "checksums.json").read_text())["sha256"].keys() == {
        BOOSTER_FILE,
        META_FILE,
    }
    assert verify_manifest(saved_bundle, expected_digest=manifest_digest(saved_bundle))
    assert load_bundle(saved_bundle).booster.num_trees() == 150
    copy = damaged_copy(saved_bundle, tmp_path, reseal=True)
    # resealed, the files match the manifest, but not the digest recorded at registration
    with pytest.raises(ArtifactRefused, match="differs from the artifact_sha256 recorded at registration"):
        verify_manifest(copy, expected_digest=manifest_digest(saved_bundle))
    (copy / "extra.txt").write_text("x")
    with pytest.raises(ArtifactRefused, match=r"extra\.txt: not in checksums\.json"):
        verify_manifest(copy)


def test_a_truncated_booster_is_refused_by_its_checksum_before_lightgbm_reads_it(
    saved_bundle: Path, tmp_path: Path
) -> None:
    copy = damaged_copy(saved_bundle, tmp_path, reseal=False)
    done = run_python(f"from models.bundle import load_bundle; load_bundle({str(copy)!r})")
    assert done.returncode == 1, f"exit {done.returncode}: {done.stderr[-2000:]}"  # < 0: LightGBM crashed
    assert f"{copy / BOOSTER_FILE}: sha256" in done.stderr and "differs from the recorded" in done.stderr


def test_a_booster_that_crashes_lightgbm_is_refused_by_the_trial_load(
    saved_bundle: Path, tmp_path: Path
) -> None:
    copy = damaged_copy(saved_bundle, tmp_path, reseal=True)
    crashed = run_python(f"import lightgbm as lgb; lgb.Booster(model_file={str(copy / BOOSTER_FILE)!r})")
    assert crashed.returncode < 0, "the damaged booster should crash a plain LightGBM load (the finding)"
    with pytest.raises(
        ArtifactRefused, match=r"trial load of the-copy \(.*bundle\) crashed the loading process \(SIG"
    ):
        probe_in_subprocess({"the-copy": copy})
    probe_in_subprocess({"sound": saved_bundle})  # a sound bundle passes
