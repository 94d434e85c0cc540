"""Model code (never artifacts): propensity models, calibration, bundles and the one `score()`.

`score` and `contributions` are loaded on first use, so that importing a light module of the package
(models.config, read by `clm --help`) does not pull in numpy and pandas."""

from __future__ import annotations

from typing import Any

__all__ = ["contributions", "score"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from models import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
