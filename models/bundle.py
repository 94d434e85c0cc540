"""A trained model as one self-contained directory: the booster (trimmed to its best iteration), the
calibration, the feature list and categories it expects, and what it was trained on. MLflow stores it
as a pyfunc artifact; serving and batch scoring load it back with `load_bundle`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb

from models.artifacts import ArtifactRefused, verify_manifest, write_manifest
from models.propensity import Calibrator, PropensityModel

log = logging.getLogger(__name__)
BOOSTER_FILE = "booster.txt"
META_FILE = "bundle.json"


@dataclass
class ModelBundle:
    name: str  # registered model name, e.g. clm-churn
    target: str  # churn | upgrade
    booster: lgb.Booster
    calibrator: Calibrator
    feature_names: list[str]
    categories: dict[str, list[str]]
    feature_version: str
    horizon_days: int
    metadata: dict[str, Any] = field(default_factory=dict)


def bundle_from_model(
    model: PropensityModel, *, name: str, target: str, feature_version: str, horizon_days: int,
    metadata: dict[str, Any] | None = None,
) -> ModelBundle:  # fmt: skip
    text = model.booster_.model_to_string(num_iteration=model.best_iteration_)
    return ModelBundle(
        name=name,
        target=target,
        booster=lgb.Booster(model_str=text),
        calibrator=model.calibrator_,
        feature_names=list(model.feature_names),
        categories={k: list(v) for k, v in (model.categories or {}).items()},
        feature_version=feature_version,
        horizon_days=horizon_days,
        metadata=dict(metadata or {}),
    )


def save_bundle(bundle: ModelBundle, path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bundle.booster.save_model(str(path / BOOSTER_FILE))
    meta = {
        "name": bundle.name,
        "target": bundle.target,
        "calibrator": bundle.calibrator.to_dict(),
        "feature_names": bundle.feature_names,
        "categories": bundle.categories,
        "feature_version": bundle.feature_version,
        "horizon_days": bundle.horizon_days,
        "metadata": bundle.metadata,
    }
    (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    write_manifest(path)
    return path


def load_bundle(path: Path) -> ModelBundle:
    """Load a bundle directory; raises ValueError naming the file when it is missing, corrupt or differs
    from its checksum manifest (checked before LightGBM reads a byte of it)."""
    path = Path(path)
    try:
        if not verify_manifest(path):
            log.warning("model bundle at %s has no checksum manifest (saved before manifests existed)", path)
    except ArtifactRefused as exc:
        raise ArtifactRefused(f"cannot load model bundle at {path}: {exc}") from exc
    try:
        meta = json.loads((path / META_FILE).read_text())
        booster = lgb.Booster(model_file=str(path / BOOSTER_FILE))
    except (OSError, ValueError, lgb.basic.LightGBMError) as exc:
        raise ValueError(f"cannot load model bundle at {path}: {exc}") from exc
    if booster.num_feature() != len(meta["feature_names"]):
        raise ValueError(
            f"bundle at {path}: booster has {booster.num_feature()} features, metadata lists {len(meta['feature_names'])}"
        )
    return ModelBundle(
        name=meta["name"],
        target=meta["target"],
        booster=booster,
        calibrator=Calibrator.from_dict(meta["calibrator"]),
        feature_names=list(meta["feature_names"]),
        categories={k: list(v) for k, v in meta["categories"].items()},
        feature_version=meta["feature_version"],
        horizon_days=int(meta["horizon_days"]),
        metadata=meta.get("metadata", {}),
    )
