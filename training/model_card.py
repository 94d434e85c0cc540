"""The model card: one markdown page a reviewer reads before a model is promoted.

`render_model_card` is pure: the training job gathers the numbers (metrics, folds, slices, gains) into
a mapping and writes the returned text where it likes (an MLflow artifact, a file). Optional parts
(oracle, backtest, calibration, slices, features) are left out cleanly when absent.

The card mapping (every key but `model` optional)::

    {
      "model": {"name", "version", "target", "horizon_days", "run_id"?},
      "data": {"first_cutoff", "last_cutoff", "train_cutoffs", "valid_cutoffs", "test_cutoffs",
               "rows": int | {split: int}, "positive_rate": float | {split: float}},
      "test_metrics": {"model": {...}, "logistic": {...}, "recency_rule": {...}, "bgnbd": {...}?,
                       "oracle": {...}?},
      "backtest": summarize_folds(...) output,
      "calibration": {"method"?, "brier_before", "brier_after", "ece_before", "ece_after"},
      "slices": slice_metrics(...) frame,
      "top_features": {name: gain} or [(name, gain), ...],
      "limitations": [str, ...],
    }

The flat layout is accepted too: `name`, `version`, `target`, `horizon_days`, `run_id`,
`feature_version`, `train_cutoffs`, `valid_cutoff(s)`, `test_cutoff(s)`, `test_rows` and
`test_positive_rate` at the top level; without a `calibration` entry, Brier and ECE before and after
come from `test_metrics["model"]` (`brier_before_calibration`, `ece_before_calibration`, `brier`, `ece`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from models.metrics import MIN_SLICE_ROWS

METRIC_ORDER: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
    "top_decile_lift",
    "recall_at_top10",
    "positive_rate",
    "positives",
    "rows",
)
SCORER_LABELS: Mapping[str, str] = {
    "model": "model",
    "logistic": "logistic baseline",
    "recency_rule": "recency rule",
    "bgnbd": "BG/NBD",
    "oracle": "oracle",
}
COUNT_METRICS = frozenset({"rows", "positives", "n", "best_iteration"})
MODEL_KEYS: tuple[str, ...] = ("name", "version", "target", "horizon_days", "run_id", "feature_version")
FLAT_DATA_KEYS: Mapping[str, str] = {
    "first_cutoff": "first_cutoff",
    "last_cutoff": "last_cutoff",
    "train_cutoffs": "train_cutoffs",
    "valid_cutoff": "valid_cutoffs",
    "valid_cutoffs": "valid_cutoffs",
    "test_cutoff": "test_cutoffs",
    "test_cutoffs": "test_cutoffs",
}
MAX_SLICE_VALUES = 8
MAX_TOP_FEATURES = 15

ORACLE_ABSENT_NOTE = (
    "No oracle is available (real data): quality is judged only against the baselines. There is no "
    "ceiling to compare with, so this card cannot say how much learnable signal the model leaves behind."
)
ORACLE_PRESENT_NOTE = (
    "The oracle scores with the simulator's true hazard, which exists only for synthetic data. Ratios to "
    "the oracle describe this simulated world, not how the model will do on real users."
)
FOLDS_NOTE = (
    "Backtest folds are consecutive cutoffs over the same users, so they are not independent: the ± std "
    "understates the uncertainty of a metric."
)


def _format_number(value: object, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return "n/a" if math.isnan(value) else f"{float(value):.{digits}f}"
    return _escape(str(value))


def _format_metric(name: str, value: object) -> str:
    """Counts as whole numbers (they arrive as floats from the metric dicts), the rest to 4 decimals."""
    if name in COUNT_METRICS and isinstance(value, numbers.Real) and not math.isnan(value):
        return f"{int(value):,}"
    return _format_number(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cutoffs(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, str) or not isinstance(value, Iterable):
        return _format_number(value)
    items = [str(item) for item in value]
    if not items:
        return "—"
    if len(items) <= 3:
        return ", ".join(items)
    return f"{items[0]} … {items[-1]} ({len(items)} cutoffs)"


def _per_split(value: object, digits: int = 4) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{split} {_format_number(number, digits)}" for split, number in value.items())
    return _format_number(value, digits)


def _model_section(model: Mapping[str, object]) -> list[str]:
    lines = ["## Model", ""]
    for key, label in (
        ("name", "Name"),
        ("version", "Version"),
        ("target", "Target"),
        ("horizon_days", "Horizon (days)"),
        ("run_id", "MLflow run"),
        ("feature_version", "Feature version"),
    ):
        if key in model:
            lines.append(f"- **{label}:** {_format_number(model[key])}")
    return lines


def _data_section(data: Mapping[str, object]) -> list[str]:
    lines = ["## Data window", ""]
    for key, label in (
        ("first_cutoff", "First cutoff"),
        ("last_cutoff", "Last cutoff"),
        ("train_cutoffs", "Train cutoffs"),
        ("valid_cutoffs", "Validation cutoffs"),
        ("test_cutoffs", "Test cutoffs"),
    ):
        if key in data:
            lines.append(f"- **{label}:** {_cutoffs(data[key])}")
    if "rows" in data:
        lines.append(f"- **Rows:** {_per_split(data['rows'])}")
    if "positive_rate" in data:
        lines.append(f"- **Positive rate:** {_per_split(data['positive_rate'])}")
    return lines


def _metric_names(tables: Iterable[Mapping[str, object]]) -> list[str]:
    present: dict[str, None] = {}
    for table in tables:
        present.update(dict.fromkeys(table))
    return [name for name in METRIC_ORDER if name in present] + [n for n in present if n not in METRIC_ORDER]


def _metrics_section(card: Mapping[str, object]) -> list[str]:
    lines = ["## Metrics", ""]
    if card.get("evaluation"):
        lines += [f"Evaluation: {card['evaluation']}.", ""]
    test_metrics: Mapping[str, Mapping[str, float]] = card.get("test_metrics") or {}
    data: Mapping[str, object] = card.get("data") or {}
    if test_metrics:
        lines += [f"On the test cutoff(s): {_cutoffs(data.get('test_cutoffs'))}.", ""]
        scorers = list(test_metrics)
        header = ["metric", *(SCORER_LABELS.get(scorer, scorer) for scorer in scorers)]
        rows = [
            [name, *(_format_metric(name, test_metrics[scorer].get(name)) for scorer in scorers)]
            for name in _metric_names(test_metrics.values())
        ]
        oracle_auc = test_metrics.get("oracle", {}).get("roc_auc")
        if oracle_auc is not None and not math.isnan(oracle_auc) and oracle_auc > 0:
            rows.append(
                [
                    "roc_auc ÷ oracle",
                    *(
                        _format_number(test_metrics[scorer].get("roc_auc", math.nan) / oracle_auc)
                        for scorer in scorers
                    ),
                ]
            )
        lines += _table(header, rows)
    else:
        lines.append("No test-cutoff metrics were recorded.")
    backtest: Mapping[str, Mapping[str, float]] = card.get("backtest") or {}
    if backtest:
        folds = max(int(stats.get("n", 0)) for stats in backtest.values())
        lines += ["", f"Backtest over {folds} fold(s), mean ± std (min – max):", ""]
        rows = [
            [
                name,
                f"{_format_number(stats.get('mean'))} ± {_format_number(stats.get('std'))}",
                f"{_format_number(stats.get('min'))} – {_format_number(stats.get('max'))}",
                _format_metric("n", stats.get("n")),
            ]
            for name, stats in ((name, backtest[name]) for name in _metric_names([backtest]))
        ]
        lines += _table(["metric", "mean ± std", "range", "folds"], rows)
    return lines


def _calibration_section(calibration: Mapping[str, object]) -> list[str]:
    lines = ["## Calibration", ""]
    if "method" in calibration:
        lines += [f"Method: {_format_number(calibration['method'])}.", ""]
    rows = [
        [
            metric,
            _format_number(calibration.get(f"{metric}_before")),
            _format_number(calibration.get(f"{metric}_after")),
        ]
        for metric in ("brier", "ece")
    ]
    return lines + _table(["metric", "before", "after"], rows)


def _slices_section(slices: pd.DataFrame, max_values: int = MAX_SLICE_VALUES) -> list[str]:
    lines = [
        "## Slices",
        "",
        f"Metrics are n/a where a slice value has under {MIN_SLICE_ROWS} rows or one class. Up to {max_values} values per "
        "slice, largest first.",
        "",
    ]
    columns = [column for column in slices.columns if column not in ("slice", "value")]
    rows: list[list[str]] = []
    hidden: list[str] = []
    for slice_name, group in slices.groupby("slice", sort=False):
        shown = group.sort_values("rows", ascending=False, kind="stable") if "rows" in group else group
        if len(shown) > max_values:
            hidden.append(f"{len(shown) - max_values} more value(s) of {slice_name}")
        for record in shown.head(max_values).to_dict("records"):
            rows.append(
                [_escape(str(slice_name)), _escape(str(record["value"]))]
                + [_format_metric(column, record[column]) for column in columns]
            )
    lines += _table(["slice", "value", *columns], rows)
    if hidden:
        lines += ["", "Not shown: " + "; ".join(hidden) + "."]
    return lines


def _top_features_section(top_features: object, limit: int = MAX_TOP_FEATURES) -> list[str]:
    pairs = list(top_features.items()) if isinstance(top_features, Mapping) else list(top_features)
    pairs = sorted(((str(name), float(gain)) for name, gain in pairs), key=lambda pair: -pair[1])
    total = sum(gain for _, gain in pairs) or math.nan
    lines = ["## Top features", "", f"By total split gain; top {min(limit, len(pairs))} of {len(pairs)}.", ""]
    rows = [
        [str(rank), _escape(name), _format_number(gain, 1), f"{100 * gain / total:.1f} %"]
        for rank, (name, gain) in enumerate(pairs[:limit], start=1)
    ]
    return lines + _table(["#", "feature", "gain", "share"], rows)


def _limitations_section(card: Mapping[str, object]) -> list[str]:
    test_metrics: Mapping[str, object] = card.get("test_metrics") or {}
    notes = [str(note) for note in card.get("limitations") or []]
    notes.append(ORACLE_PRESENT_NOTE if "oracle" in test_metrics else ORACLE_ABSENT_NOTE)
    if card.get("backtest"):
        notes.append(FOLDS_NOTE)
    return ["## Known limitations", "", *(f"- {note}" for note in notes)]


def _nested(card: Mapping[str, object]) -> dict[str, object]:
    """The card in the nested layout, whichever layout it came in."""
    nested = dict(card)
    model = card.get("model")
    model = dict(model) if isinstance(model, Mapping) else ({"name": model} if model else {})
    model.update({key: card[key] for key in MODEL_KEYS if key in card and key not in model})
    nested["model"] = model
    data = dict(card.get("data") or {})
    for flat_key, key in FLAT_DATA_KEYS.items():
        if flat_key in card and key not in data:
            data[key] = card[flat_key]
    if "test_rows" in card and "rows" not in data:
        data["rows"] = {"test": card["test_rows"]}
    if "test_positive_rate" in card and "positive_rate" not in data:
        data["positive_rate"] = {"test": card["test_positive_rate"]}
    nested["data"] = data
    scores: Mapping[str, object] = (card.get("test_metrics") or {}).get("model") or {}
    if not card.get("calibration") and any(f"{m}_before_calibration" in scores for m in ("brier", "ece")):
        nested["calibration"] = {
            f"{metric}_{when}": scores.get(key)
            for metric in ("brier", "ece")
            for when, key in (("before", f"{metric}_before_calibration"), ("after", metric))
        }
    return nested


def render_model_card(card: Mapping[str, object]) -> str:
    """Markdown for the card: model, data window, metrics, calibration, slices, features, limitations."""
    card = _nested(card)
    model: Mapping[str, object] = card["model"]
    title = f"# Model card: {model.get('name', 'unnamed model')}"
    if "version" in model:
        title += f" v{model['version']}"
    sections = [[title], _model_section(model), _data_section(card.get("data") or {}), _metrics_section(card)]
    if card.get("calibration"):
        sections.append(_calibration_section(card["calibration"]))
    slices = card.get("slices")
    if isinstance(slices, pd.DataFrame) and not slices.empty:
        sections.append(_slices_section(slices))
    if card.get("top_features"):
        sections.append(_top_features_section(card["top_features"]))
    sections.append(_limitations_section(card))
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
