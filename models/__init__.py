"""Model code (never artifacts): propensity models, calibration, bundles and the one `score()`."""

from models.scoring import contributions, score

__all__ = ["contributions", "score"]
