"""Reading a decision back: every action's value as its parts, and what differs between a logged decision
and its re-run under the same versions (pure functions over the logged record)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from models.snapshot import in_language as snapshot_in_language
from models.snapshot import snapshot_age
from models.stages import StageRules
from serving.scorer import Decided

REPLAY_TOLERANCE = 1e-9


def in_language(candidates: list[dict[str, Any]], again: Decided | None) -> list[dict[str, Any]]:
    """Logged candidates with their reasons as the re-run gives them, in the reader's language (the logged
    reasons are in the language the decision was made in); as logged when there is no re-run."""
    if again is None:
        return candidates
    reasons = {c["name"]: c["reason"] for c in again.candidates}
    return [{**c, "reason": reasons.get(c["name"], c.get("reason", ""))} for c in candidates]


def breakdown(
    candidates: list[dict[str, Any]], clv: float | None = None, upgrade_value: float | None = None
) -> list[dict[str, Any]]:
    """Every candidate's value as its parts: Δp(stay or return) × value if retained, Δupgrade × upgrade
    value, −cost. Candidates carry their terms; a decision logged before they did is read as it was
    computed then (−Δchurn × CLV), from `clv` and `upgrade_value`."""
    rows = []
    for c in candidates:
        if "retention_value" in c:
            rows.append(dict(c))
            continue
        retention = -float(c.get("delta_churn", 0.0)) * (clv or 0.0)
        growth = float(c.get("delta_upgrade", 0.0)) * (upgrade_value or 0.0)
        rows.append({**c, "retention_value": retention, "upgrade_gain": growth})
    return sorted(rows, key=lambda r: (r["status"] != "chosen", -r["expected_value"]))


def compare_replay(logged: dict[str, Any], again: Decided, rules: StageRules) -> list[str]:
    """What differs between a logged decision and its re-run (empty when it reproduces). The re-run speaks the
    reader's language, the logged decision the caller's: a stage rule is the same rule in either (`rules`)."""
    payload = logged["payload"]
    new = again.decision
    differences = []
    if not rules.same_rule(payload["stage"]["rule"], new.stage.rule):
        differences.append(f"stage rule: logged {payload['stage']['rule']!r}, now {new.stage.rule!r}")
    checks = [
        ("stage", payload["stage"]["name"], new.stage.name),
        ("churn probability", payload["churn"]["probability"], new.churn.probability),
        ("upgrade probability", payload["upgrade"]["probability"], new.upgrade.probability),
        ("clv", payload["clv"], new.clv),
    ]
    checks.append(("action", payload["action"]["name"], new.action.name))
    checks.append(("propensity", float(logged["propensity"]), again.propensity))
    before = {c["name"]: c for c in logged["candidates"]}
    for c in again.candidates:
        old = before.get(c["name"])
        if old is None:
            differences.append(f"candidate {c['name']} was not in the logged decision")
            continue
        checks.append((f"{c['name']} expected value", old["expected_value"], c["expected_value"]))
    for name, old_value, new_value in checks:
        if isinstance(old_value, float) or isinstance(new_value, float):
            if not math.isclose(
                float(old_value), float(new_value), rel_tol=REPLAY_TOLERANCE, abs_tol=REPLAY_TOLERANCE
            ):
                differences.append(f"{name}: logged {old_value!r}, now {new_value!r}")
        elif old_value != new_value:
            differences.append(f"{name}: logged {old_value!r}, now {new_value!r}")
    return differences


def logged_snapshot(logged: dict[str, Any], stale_after_days: int, lang: str = "en") -> dict[str, Any] | None:
    """The snapshot's age a logged decision carried when it was made; for one logged before decisions carried
    it, its age on the day it was logged, from its `as_of` (None for a posted vector)."""
    payload = logged["payload"]
    if payload.get("snapshot"):
        return snapshot_in_language(payload["snapshot"], lang)
    if not payload.get("as_of"):
        return None
    as_of = dt.date.fromisoformat(payload["as_of"])
    return snapshot_age(as_of, logged["ts"].date(), stale_after_days, lang).as_dict()
