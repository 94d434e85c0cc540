"""Uplift from the campaign history (DESIGN.md §4): T- and X-learners over LightGBM, one per action and
outcome, weighted by the inverse of the logged propensity; actions with too little history fall back to
the catalog's prior effect and say so.

The estimate for action `a` and outcome `y` is tau_a(x) = P(y | x, contacted with a) − P(y | x, no contact).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.config import ActionSection, PolicySection
from models.frame import encode_row, model_matrix

logger = logging.getLogger(__name__)

META_FILE = "uplift.json"
LEARNERS = ("t", "x")
PRIOR_KEY_PREFIX = "prior_delta_"

# The tree settings shipped in clm/defaults.toml [policy.lightgbm]; small trees because the groups are small.
DEFAULT_LIGHTGBM: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 5.0,
}
# Parameters that only make sense for a binary response; dropped for the X-learner's effect regressions.
_BINARY_ONLY = ("metric", "scale_pos_weight", "is_unbalance", "sigmoid", "num_class")
# Up to this many rows a prediction runs on one thread whatever the caller asks: OpenMP start-up costs
# more than it saves (measured on 2 busy cores: one row 45 µs per booster on 1 thread, 3 ms on 2).
SINGLE_THREAD_ROWS = 2000


@dataclass(frozen=True)
class UpliftParams:
    """The config's `[policy]` settings for the uplift learners."""

    learner: str = "x"  # "t" or "x"
    min_treated_rows: int = 300
    min_treated_positives: int = 20
    lightgbm: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LIGHTGBM))
    num_boost_round: int = 150
    seed: int = 0
    # Empirical-Bayes shrinkage (see UpliftModel): the prior's standard deviation around each action's
    # configured prior effect, and the rows at which half of the modelled heterogeneity is trusted.
    shrinkage: bool = True
    prior_sd: float = 0.02
    heterogeneity_rows: int = 1000
    # Share of the shrunk effect that follows the user's own baseline (no-contact) probability instead of
    # the trees: center × m0(x) / mean of m0 over the contacted (a constant relative effect). 0 = trees only.
    baseline_share: float = 0.0

    def __post_init__(self) -> None:
        if self.learner not in LEARNERS:
            raise ValueError(f"uplift learner must be one of {LEARNERS}, got {self.learner!r}")
        if self.prior_sd <= 0 or self.heterogeneity_rows < 0:
            raise ValueError("prior_sd must be > 0 and heterogeneity_rows ≥ 0")
        if not 0.0 <= self.baseline_share <= 1.0:
            raise ValueError(f"baseline_share must be in [0, 1], got {self.baseline_share}")

    @classmethod
    def from_config(cls, policy_section: PolicySection) -> UpliftParams:
        """From the config's `[policy]` table, including its `lightgbm` table (whose `num_boost_round`
        is taken out)."""
        tree = dict(policy_section.lightgbm)
        num_boost_round = tree.pop("num_boost_round", cls.num_boost_round)
        if isinstance(num_boost_round, bool) or not isinstance(num_boost_round, int) or num_boost_round < 1:
            raise ValueError(
                f"policy.lightgbm.num_boost_round must be a whole number ≥ 1, got {num_boost_round!r}"
            )
        return cls(
            learner=policy_section.learner,
            min_treated_rows=policy_section.min_treated_rows,
            min_treated_positives=policy_section.min_treated_positives,
            lightgbm=tree or dict(DEFAULT_LIGHTGBM),
            num_boost_round=num_boost_round,
            seed=policy_section.seed,
            shrinkage=policy_section.shrinkage,
            prior_sd=policy_section.prior_sd,
            heterogeneity_rows=policy_section.heterogeneity_rows,
            baseline_share=policy_section.baseline_share,
        )


def priors_from_catalog(actions_section: Mapping[str, ActionSection]) -> dict[str, dict[str, float]]:
    """The config's `[actions.*]` → action → {outcome: prior effect}, from each `prior_delta_<outcome>` key."""
    return {
        action: {
            key.removeprefix(PRIOR_KEY_PREFIX): value
            for key, value in spec.as_dict().items()
            if key.startswith(PRIOR_KEY_PREFIX)
        }
        for action, spec in actions_section.items()
    }


def _categories_of(X: pd.DataFrame) -> dict[str, list[Any]]:
    """Category lists: a categorical column's own categories; a text column's sorted distinct values."""
    out: dict[str, list[Any]] = {}
    for name in X.columns:
        dtype = X[name].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            out[str(name)] = dtype.categories.tolist()
        elif pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            out[str(name)] = sorted(str(v) for v in X[name].dropna().unique())
    return out


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class UpliftModel:
    """Per-action effect of a contact on each binary outcome, learned from logged campaign decisions.

    `priors` maps action → {outcome: prior effect} (the catalog's `prior_delta_<outcome>`, see
    `priors_from_catalog`); its keys, in order, are the actions predicted. Rows whose action is `control` form the holdout.

    Learners (`params.learner`):
    - "t": tau_a(x) = m_a(x) − m0(x), with m0 / m_a LightGBM response models on control / action-a rows.
    - "x" (Künzel et al. 2019): imputed effects D1 = y − m0(x) on action-a rows and D0 = m_a(x) − y on
      control rows, LightGBM regressions tau1 on D1 and tau0 on D0, and
      tau_a(x) = g_a·tau0(x) + (1 − g_a)·tau1(x). The weight g_a is a constant per action and outcome — the
      share of action-a rows among control ∪ action-a rows with a known outcome — not a fitted propensity
      model g(x). It only decides how the two estimates are blended (the weights below correct for
      targeting), and a constant keeps prediction cheap.
    Every response and effect model is fitted with sample weights 1/propensity (the inverse probability of
    the logged assignment), normalised to mean 1 within the group it is fitted on, so a logging policy
    that targeted some users more often does not bias the comparison.

    An action gets its own models for an outcome only with at least `min_treated_rows` logged rows with a
    known outcome, of which at least `min_treated_positives` are positive and as many negative; otherwise
    its prior is used as a constant and `sources_[action][outcome]` is "prior" (else "model"). The control
    group must pass the same thresholds, or every action uses its prior for that outcome and m0 is the
    control group's weighted rate (NaN without any control row).
    """

    def __init__(
        self, params: UpliftParams, priors: Mapping[str, Mapping[str, float]], control: str = "no_action"
    ) -> None:
        self.params = params
        self.priors = priors
        self.control = control

    # ------------------------------------------------------------------------------------------- fit
    def fit(
        self,
        X: pd.DataFrame,
        action: Sequence[str] | np.ndarray | pd.Series,
        propensity: Sequence[float] | np.ndarray | pd.Series | None,
        outcomes: Mapping[str, np.ndarray],
    ) -> UpliftModel:
        """Fit the learners on one row per logged decision; `outcomes` holds 0/1 with NaN = unknown.
        `propensity=None` fits unweighted (every row weight 1)."""
        n = len(X)
        actions = pd.Series(action).to_numpy(dtype=object)
        weights = self._inverse_propensity(propensity, n)
        if len(actions) != n:
            raise ValueError(f"action has {len(actions)} rows, X has {n}")
        if not outcomes:
            raise ValueError("no outcomes given")
        labels: dict[str, np.ndarray] = {}
        for name, values in outcomes.items():
            y = np.asarray(values, dtype=float)
            if len(y) != n:
                raise ValueError(f"outcome {name!r} has {len(y)} rows, X has {n}")
            if np.any(~np.isnan(y) & (y != 0.0) & (y != 1.0)):
                raise ValueError(f"outcome {name!r} must be 0, 1 or NaN")
            labels[str(name)] = y
        self.actions_ = [str(a) for a in self.priors if a != self.control]
        self.outcomes_ = list(labels)
        missing = [f"{a}/{o}" for a in self.actions_ for o in self.outcomes_ if o not in self.priors[a]]
        if missing:
            raise ValueError(f"no prior effect for {', '.join(missing)}")
        self.priors_ = {a: {o: float(self.priors[a][o]) for o in self.outcomes_} for a in self.actions_}
        unknown = sorted(set(actions) - {*self.actions_, self.control}, key=str)
        if unknown:
            logger.warning("ignoring %d rows with actions outside the catalog: %s",
                           int(np.isin(actions, unknown).sum()), unknown)  # fmt: skip

        self.feature_names_ = [str(c) for c in X.columns]
        self.categories_ = _categories_of(X)
        matrix = self.encode(X)
        self.boosters_: dict[tuple[str, str, str], lgb.Booster] = {}
        self.control_rate_: dict[str, float | None] = {}
        self.g_: dict[str, dict[str, float]] = {a: {} for a in self.actions_}
        self.sources_: dict[str, dict[str, str]] = {a: {} for a in self.actions_}
        self.shrink_: dict[str, dict[str, dict[str, float]]] = {a: {} for a in self.actions_}
        self.diagnostics_: dict[str, dict[str, dict[str, Any]]] = {
            a: {} for a in [self.control, *self.actions_]
        }
        for outcome, y in labels.items():
            self._fit_outcome(outcome, matrix, actions, weights, y)
        return self

    @staticmethod
    def _inverse_propensity(propensity: Any, n: int) -> np.ndarray:
        if propensity is None:
            return np.ones(n)
        p = np.asarray(propensity, dtype=float)
        if len(p) != n:
            raise ValueError(f"propensity has {len(p)} rows, X has {n}")
        bad = ~((p > 0.0) & (p <= 1.0))
        if bad.any():
            raise ValueError(
                f"propensity must be in (0, 1]: {int(bad.sum())} rows are not (first: {p[bad][0]})"
            )
        return 1.0 / p

    def _group_stats(self, y: np.ndarray, w: np.ndarray) -> dict[str, Any]:
        positives = int(y.sum())
        return {
            "rows": len(y),
            "positives": positives,
            "negatives": len(y) - positives,
            "mean_inverse_propensity": float(w.mean()) if len(w) else math.nan,
            "max_inverse_propensity": float(w.max()) if len(w) else math.nan,
        }

    def _enough(self, stats: Mapping[str, Any]) -> bool:
        return (
            stats["rows"] >= self.params.min_treated_rows
            and stats["positives"] >= self.params.min_treated_positives
            and stats["negatives"] >= self.params.min_treated_positives
        )

    def _fit_outcome(
        self, outcome: str, matrix: np.ndarray, actions: np.ndarray, weights: np.ndarray, y: np.ndarray
    ) -> None:
        known = ~np.isnan(y)
        in_control = known & (actions == self.control)
        control_stats = self._group_stats(y[in_control], weights[in_control])
        control_ok = self._enough(control_stats)
        self.diagnostics_[self.control][outcome] = {
            **control_stats,
            "source": "model" if control_ok else "rate",
        }
        if control_ok:
            m0 = self._train(matrix[in_control], y[in_control], weights[in_control], regression=False)
            self.boosters_[(outcome, "m0", self.control)] = m0
            self.control_rate_[outcome] = None
        else:
            self.control_rate_[outcome] = (
                float(np.average(y[in_control], weights=weights[in_control])) if in_control.any() else None
            )
            logger.info("outcome %s: control group too small (%s); every action uses its prior",
                        outcome, control_stats)  # fmt: skip

        for action in self.actions_:
            treated = known & (actions == action)
            stats = self._group_stats(y[treated], weights[treated])
            share = stats["rows"] / max(stats["rows"] + control_stats["rows"], 1)
            source = "model" if control_ok and self._enough(stats) else "prior"
            self.sources_[action][outcome] = source
            self.diagnostics_[action][outcome] = {**stats, "source": source, "g": share}
            if source == "prior":
                continue
            m1 = self._train(matrix[treated], y[treated], weights[treated], regression=False)
            m0 = self.boosters_[(outcome, "m0", self.control)]
            imputed_treated = y[treated] - self._predict_booster(m0, matrix[treated])
            if self.params.learner == "t":
                self.boosters_[(outcome, "m1", action)] = m1
            else:
                imputed_control = self._predict_booster(m1, matrix[in_control]) - y[in_control]
                self.boosters_[(outcome, "tau1", action)] = self._train(
                    matrix[treated], imputed_treated, weights[treated], regression=True
                )
                self.boosters_[(outcome, "tau0", action)] = self._train(
                    matrix[in_control], imputed_control, weights[in_control], regression=True
                )
                self.g_[action][outcome] = share
            raw = self._raw_effect(action, outcome, matrix[treated])
            shrink = self._shrinkage(imputed_treated, raw, weights[treated], self.priors_[action][outcome])
            baseline = y[treated] - imputed_treated  # m0(x) on the contacted
            shrink["baseline_mean"] = float(np.average(baseline, weights=weights[treated]))
            self.diagnostics_[action][outcome].update(shrink)  # ate_se is reported with or without shrinkage
            if self.params.shrinkage:
                self.shrink_[action][outcome] = shrink

    def _shrinkage(
        self, residual: np.ndarray, raw_effect: np.ndarray, w: np.ndarray, prior: float
    ) -> dict[str, float]:
        """Empirical Bayes for one action and outcome. The average effect on the treated is estimated as
        the weighted mean of y − m0(x) over treated rows (control model as the counterfactual), with its
        standard error; it is combined with the configured prior (normal, sd `prior_sd`) by precision.
        The model's deviations from its own mean are kept in proportion n / (n + heterogeneity_rows):
        with few contacts the decision leans on the well-measured average, not on noisy per-user trees.
        `fit` adds `baseline_mean`, the mean no-contact probability m0(x) of the contacted, which spreads
        the average over users in proportion to their own baseline (`UpliftParams.baseline_share`)."""
        w = w / w.sum()
        ate = float(np.sum(w * residual))
        n_eff = 1.0 / float(np.sum(w**2))
        variance = float(np.sum(w * (residual - ate) ** 2)) / max(n_eff - 1.0, 1.0)
        precision_data = 1.0 / max(variance, 1e-12)
        precision_prior = 1.0 / self.params.prior_sd**2
        center = (prior * precision_prior + ate * precision_data) / (precision_prior + precision_data)
        return {
            "ate": ate,
            "ate_se": variance**0.5,
            "center": float(center),
            "model_mean": float(np.sum(w * raw_effect)),
            "heterogeneity_weight": n_eff / (n_eff + self.params.heterogeneity_rows),
        }

    def _raw_effect(self, action: str, outcome: str, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The learner's own (unshrunk) effect estimate for one fitted action."""

        def booster(role: str, who: str) -> np.ndarray:
            return self._predict_booster(self.boosters_[(outcome, role, who)], matrix, num_threads)

        if self.params.learner == "t":
            return booster("m1", action) - booster("m0", self.control)
        g = self.g_[action][outcome]
        return np.clip(g * booster("tau0", action) + (1.0 - g) * booster("tau1", action), -1.0, 1.0)

    def lgb_params(self, *, regression: bool) -> dict[str, Any]:
        """The exact parameters given to lightgbm.train for a response (binary) or effect (regression) model."""
        params = {**DEFAULT_LIGHTGBM, **self.params.lightgbm}
        params.pop("num_boost_round", None)
        if regression:
            for key in _BINARY_ONLY:
                params.pop(key, None)
            params["objective"] = "regression"
        params.update(
            seed=self.params.seed,
            deterministic=True,
            force_row_wise=True,
            verbosity=-1,
            # one thread unless told: the groups are small (thousands of rows) and OpenMP costs more than it
            # saves — measured 0.19 s on 1 thread vs 0.6–2.2 s on 2 for 8k rows × 150 rounds on a busy 2-core box
            num_threads=params.get("num_threads", 1),
        )
        return params

    def _train(
        self, matrix: np.ndarray, y: np.ndarray, weights: np.ndarray, *, regression: bool
    ) -> lgb.Booster:
        weights = weights / weights.mean()
        data = lgb.Dataset(
            matrix,
            label=y,
            weight=weights,
            feature_name=self.feature_names_,
            categorical_feature=self._categorical_indices(),
            free_raw_data=True,
        )
        return lgb.train(
            self.lgb_params(regression=regression), data, num_boost_round=self.params.num_boost_round
        )

    def _categorical_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.feature_names_) if name in self.categories_]

    def standard_error(self, action: str, outcome: str) -> float:
        """Standard error of the action's average effect on `outcome`, as the decision uses it: `prior_sd`
        for a prior; for a model, the posterior sd of the shrunk average, (1/prior_sd² + 1/ate_se²)^−½, or
        without shrinkage the raw average's standard error. The trees' per-user deviations are not in it."""
        if self.sources_[action][outcome] == "prior":
            return float(self.params.prior_sd)
        ate_se = float(self.diagnostics_.get(action, {}).get(outcome, {}).get("ate_se", math.nan))
        if outcome in self.shrink_.get(action, {}):
            return (1.0 / self.params.prior_sd**2 + 1.0 / max(ate_se, 1e-12) ** 2) ** -0.5
        return ate_se

    # --------------------------------------------------------------------------------------- predict
    def encode(self, X: pd.DataFrame) -> np.ndarray:
        """The float matrix the boosters read: `model_matrix` in the fitted feature order, categoricals as
        their category codes (NaN when missing or unseen)."""
        frame = model_matrix(X, self.feature_names_, self.categories_)
        out = np.empty((len(frame), len(self.feature_names_)), dtype=np.float64)
        for j, name in enumerate(self.feature_names_):
            column = frame[name]
            if name in self.categories_:
                codes = column.cat.codes.to_numpy(dtype=np.float64)
                codes[codes < 0] = np.nan
                out[:, j] = codes
            else:
                out[:, j] = column.to_numpy(dtype=np.float64)
        return out

    def encode_row(self, row: Mapping[str, Any]) -> np.ndarray:
        """One user's features (name → value, e.g. from the online store) as a 1-row matrix, without pandas."""
        return encode_row(row, self.feature_names_, self.categories_)

    @staticmethod
    def _predict_booster(booster: lgb.Booster, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        threads = 1 if len(matrix) <= SINGLE_THREAD_ROWS else num_threads
        return booster.predict(matrix, num_threads=threads)

    def predict_control_encoded(self, matrix: np.ndarray, *, num_threads: int = 0) -> dict[str, np.ndarray]:
        """`predict_control` on a matrix from `encode` / `encode_row`."""
        out: dict[str, np.ndarray] = {}
        for outcome in self.outcomes_:
            booster = self.boosters_.get((outcome, "m0", self.control))
            if booster is not None:
                out[outcome] = self._predict_booster(booster, matrix, num_threads)
            else:
                rate = self.control_rate_[outcome]
                out[outcome] = np.full(len(matrix), math.nan if rate is None else rate)
        return out

    def predict_encoded(self, matrix: np.ndarray, *, num_threads: int = 0) -> dict[str, np.ndarray]:
        """`predict` on a matrix from `encode` / `encode_row`."""
        out: dict[str, np.ndarray] = {}
        for outcome in self.outcomes_:

            def booster_predict(role: str, action: str, outcome: str = outcome) -> np.ndarray:
                return self._predict_booster(self.boosters_[(outcome, role, action)], matrix, num_threads)

            effects = np.empty((len(matrix), len(self.actions_)), dtype=np.float64)
            m0: np.ndarray | None = None
            for j, action in enumerate(self.actions_):
                if self.sources_[action][outcome] == "prior":
                    effects[:, j] = self.priors_[action][outcome]
                    continue
                if self.params.learner == "t":
                    if m0 is None:
                        m0 = booster_predict("m0", self.control)
                    raw = booster_predict("m1", action) - m0
                else:
                    g = self.g_[action][outcome]
                    tau = g * booster_predict("tau0", action) + (1.0 - g) * booster_predict("tau1", action)
                    raw = np.clip(tau, -1.0, 1.0)
                shrink = self.shrink_.get(action, {}).get(outcome)
                if shrink is not None:
                    raw = shrink["center"] + shrink["heterogeneity_weight"] * (raw - shrink["model_mean"])
                    share = self.params.baseline_share
                    if share > 0 and shrink.get("baseline_mean", 0.0) > 0:
                        if m0 is None:
                            m0 = booster_predict("m0", self.control)
                        proportional = shrink["center"] * m0 / shrink["baseline_mean"]
                        raw = (1.0 - share) * raw + share * proportional
                effects[:, j] = np.clip(raw, -1.0, 1.0)
            out[outcome] = effects
        return out

    def predict(self, X: pd.DataFrame, *, num_threads: int = 0) -> dict[str, np.ndarray]:
        """Outcome → (n, len(actions_)): the estimated change in the outcome's probability if contacted
        with each action (columns in `actions_` order) instead of no contact. Batches of up to
        `SINGLE_THREAD_ROWS` rows run on one thread, larger ones on `num_threads` (0 = LightGBM's default)."""
        return self.predict_encoded(self.encode(X), num_threads=num_threads)

    def predict_control(self, X: pd.DataFrame, *, num_threads: int = 0) -> dict[str, np.ndarray]:
        """Outcome → (n,): m0(x), the probability without contact (for doubly-robust evaluation)."""
        return self.predict_control_encoded(self.encode(X), num_threads=num_threads)

    def predict_one(self, row: Mapping[str, Any] | pd.DataFrame) -> dict[str, np.ndarray]:
        """One user (name → value mapping, or a 1-row frame) → outcome → (len(actions_),) effects."""
        matrix = self.encode_row(row) if isinstance(row, Mapping) else self.encode(row)
        if len(matrix) != 1:
            raise ValueError(f"predict_one takes one row, got {len(matrix)}")
        return {outcome: effects[0] for outcome, effects in self.predict_encoded(matrix).items()}

    # ------------------------------------------------------------------------------------ save / load
    def save(self, path: Path) -> Path:
        """A directory: one LightGBM model text file per booster and `uplift.json` with everything else."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        boosters = []
        for i, ((outcome, role, action), booster) in enumerate(self.boosters_.items()):
            file = f"{i:03d}_{_safe_name(outcome)}_{role}_{_safe_name(action)}.txt"
            booster.save_model(str(path / file))
            boosters.append({"outcome": outcome, "role": role, "action": action, "file": file})
        meta = {
            "params": asdict(self.params),
            "control": self.control,
            "priors": self.priors_,
            "actions": self.actions_,
            "outcomes": self.outcomes_,
            "sources": self.sources_,
            "g": self.g_,
            "shrink": self.shrink_,
            "control_rate": self.control_rate_,
            "feature_names": self.feature_names_,
            "categories": self.categories_,
            "diagnostics": self.diagnostics_,
            "boosters": boosters,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: Path) -> UpliftModel:
        """Load a directory written by `save`; raises ValueError naming the file when missing or corrupt."""
        path = Path(path)
        meta_path = path / META_FILE
        try:
            meta = json.loads(meta_path.read_text())
            model = cls(UpliftParams(**meta["params"]), meta["priors"], meta["control"])
            model.priors_ = {a: dict(v) for a, v in meta["priors"].items()}
            model.actions_ = list(meta["actions"])
            model.outcomes_ = list(meta["outcomes"])
            model.sources_ = meta["sources"]
            model.g_ = meta["g"]
            model.shrink_ = meta.get("shrink", {})
            model.control_rate_ = meta["control_rate"]
            model.feature_names_ = list(meta["feature_names"])
            model.categories_ = {k: list(v) for k, v in meta["categories"].items()}
            model.diagnostics_ = meta["diagnostics"]
            entries = list(meta["boosters"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot load uplift model metadata {meta_path}: {exc}") from exc
        model.boosters_ = {}
        for entry in entries:
            file = path / entry["file"]
            try:
                booster = lgb.Booster(model_file=str(file))
            except (OSError, ValueError, lgb.basic.LightGBMError) as exc:
                raise ValueError(f"cannot load uplift booster {file}: {exc}") from exc
            if booster.num_feature() != len(model.feature_names_):
                raise ValueError(
                    f"uplift booster {file} has {booster.num_feature()} features, "
                    f"{meta_path} lists {len(model.feature_names_)}"
                )
            model.boosters_[(entry["outcome"], entry["role"], entry["action"])] = booster
        return model
