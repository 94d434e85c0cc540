"""`clm promote`: move `champion` to the challenger only if it is no worse on the same backtest (within
the configured tolerance) and passed the model behaviour checks; record the decision on the version."""

from __future__ import annotations

import math
from typing import Any

from training import tracking


class PromotionError(ValueError):
    """Nothing to promote (no challenger), or the registry cannot be read."""


def promote_model(
    name: str, *, metric: str, tolerance: float, minimum: float | None = None
) -> tracking.PromotionDecision:
    """Decide on the challenger of `name` and apply the decision; `minimum` is a floor the challenger's
    metric must reach whatever the champion (the policy's offline value: never promote a loss)."""
    challenger = tracking.version_by_alias(name, "challenger")
    if challenger is None:
        raise PromotionError(f"{name} has no @challenger version: run `clm train` first")
    champion = tracking.version_by_alias(name, "champion")
    metrics = tracking.version_metrics(name, str(challenger.version))
    behaviour = metrics.get("behaviour_passed", 0.0) == 1.0
    champion_metrics: dict[str, Any] | None = None
    compared = "none"
    if champion is not None and str(champion.version) != str(challenger.version):
        same_backtest = metrics.get(f"champion_{metric}")
        if same_backtest is None or math.isnan(same_backtest):
            # the champion could not be scored on the challenger's backtest: fall back to its own run, and say so
            champion_metrics = {
                metric: tracking.version_metrics(name, str(champion.version)).get(metric, float("nan"))
            }
            compared = f"v{champion.version} (its own backtest: it could not be scored on the challenger's)"
        else:
            champion_metrics = {metric: same_backtest}
            compared = f"v{champion.version} on the challenger's backtest"
    decision = tracking.decide_promotion(
        {metric: metrics.get(metric, float("nan"))},
        champion_metrics,
        metric=metric,
        tolerance=tolerance,
        behaviour_passed=behaviour,
        behaviour_report="behaviour checks passed"
        if behaviour
        else "behaviour checks failed (see behaviour.txt)",
        minimum=minimum,
    )
    decision.reasons.append(f"compared with: {compared}")
    tracking.promote(name, decision, str(challenger.version))
    return decision
