"""Figures for training runs, reviewer pages and campaign reports: calibration, lift and gains, SHAP
summaries and waterfalls, importance, stage and action mixes, score distributions.

Every function returns a `matplotlib.figure.Figure` and touches nothing global at import. Figures are
built on the object API (no pyplot state), so they render with the Agg canvas whatever backend the
process has. Only the SHAP beeswarm needs pyplot (shap draws on the current figure); it selects Agg
there if no backend is in use yet, and detaches its figure from pyplot before returning it.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.metrics import (
    MIN_RELIABLE_BIN_USERS,
    expected_calibration_error,
    reliability_table,
    score_axis_range,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PNG_DPI = 110
MAX_IMPORTANCE_BARS = 25


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _feature_contributions(contributions: np.ndarray, X: pd.DataFrame) -> np.ndarray:
    """Per-feature contributions; drops LightGBM's trailing bias column when it is still there."""
    values = np.asarray(contributions, dtype="float64")
    if values.ndim != 2 or values.shape[0] != len(X):
        raise ValueError(f"contributions must be (rows, features) with {len(X)} rows, got {values.shape}")
    if values.shape[1] == X.shape[1] + 1:
        return values[:, :-1]
    if values.shape[1] != X.shape[1]:
        raise ValueError(
            f"contributions have {values.shape[1]} columns for {X.shape[1]} features "
            "(expected the features, optionally plus the bias column of pred_contrib)"
        )
    return values


def _is_categorical(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(series.dtype)


def _codes(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Category codes as floats (NaN for missing) and the category labels they index."""
    categorical = series.astype("category")
    codes = categorical.cat.codes.to_numpy().astype("float64")
    codes[codes < 0] = np.nan
    return codes, [str(category) for category in categorical.cat.categories]


def _numeric_view(X: pd.DataFrame) -> pd.DataFrame:
    """X with categorical columns replaced by their codes, for colouring by feature value."""
    columns = {
        column: _codes(X[column])[0] if _is_categorical(X[column]) else X[column].astype("float64").to_numpy()
        for column in X.columns
    }
    return pd.DataFrame(columns, index=X.index)


def calibration_figure(
    y_true: object,
    p_before: object | None,
    p_after: object,
    n_bins: int = 10,
    *,
    title: str = "Calibration",
    min_users: int = MIN_RELIABLE_BIN_USERS,
) -> Figure:
    """Reliability diagram (before and) after calibration on the scores' own range: each bin's observed rate
    against its mean score, the users of every bin of the last curve written beside its point, and bins with
    fewer than `min_users` users drawn hollow (too few to read); the diagonal, ECE in the legend (the metric's,
    equal-width bins over 0–1, and the drawn bins'), the users per bin below. `p_before=None` draws the served, calibrated scores
    alone. The bins are `models.metrics.reliability_table`'s, which pages print beside the figure."""
    y = np.asarray(y_true, dtype="float64").ravel()
    curves = (
        (("before", p_before, "o"), ("after", p_after, "s"))
        if p_before is not None
        else (("calibrated", p_after, "s"),)
    )
    scores = [np.asarray(values, dtype="float64").ravel() for _, values, _ in curves]
    low, high = score_axis_range(*scores)
    figure = _new_figure(6.0, 6.5)
    curve_axes, count_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    curve_axes.plot([low, high], [low, high], linestyle="--", color="grey", label="perfectly calibrated")
    top, hollow = high, False
    for position, ((label, _, marker), p) in enumerate(zip(curves, scores, strict=True)):
        ece = expected_calibration_error(y, p, n_bins=n_bins)
        bins = reliability_table(y, p, n_bins, score_range=(low, high), min_users=min_users)
        x, observed = bins["mean_predicted"].to_numpy(), bins["observed_rate"].to_numpy()
        reliable = bins["reliable"].to_numpy()
        # the metric's ECE bins 0–1: scores all below 0.1 share one bin and it reads ~0; say the drawn bins' too
        drawn = float((bins["users"] * (bins["observed_rate"] - bins["mean_predicted"]).abs()).sum() / y.size)
        (line,) = curve_axes.plot(x, observed, label=f"{label} (ECE {ece:.3f}; {drawn:.3f} on these bins)")
        colour = line.get_color()
        curve_axes.scatter(x[reliable], observed[reliable], marker=marker, color=colour, zorder=3)
        curve_axes.scatter(x[~reliable], observed[~reliable], marker=marker, facecolors="none",
                           edgecolors=colour, linewidths=1.5, zorder=3)  # fmt: skip
        hollow = hollow or not reliable.all()
        top = max(top, float(observed.max(initial=0.0)))
        if position == len(curves) - 1:
            for x_bin, y_bin, users in zip(x, observed, bins["users"], strict=True):
                curve_axes.annotate(f"{users:,}", (x_bin, y_bin), xytext=(0, 7), textcoords="offset points",
                                    ha="center", fontsize=8, color=colour)  # fmt: skip
        count_axes.hist(p, bins=n_bins, range=(low, high), histtype="step", label=label)
    if hollow:
        curve_axes.scatter([], [], marker="o", facecolors="none", edgecolors="grey",
                           label=f"bin of < {min_users} users: unreliable")  # fmt: skip
    curve_axes.set(xlim=(low, high), ylim=(0, min(1.0, top) * 1.1 + 0.01), ylabel="observed positive rate")
    curve_axes.set_title(title, fontsize="medium")  # the report's titles name model, population and cutoff
    curve_axes.legend(loc="upper left", fontsize=8)
    count_axes.set(xlabel="predicted probability (the scores' range)", ylabel="users")
    return figure


def _gains(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share of positives captured against the share of rows targeted, best first."""
    order = np.argsort(-scores, kind="stable")
    captured = np.cumsum(y[order]) / max(y.sum(), 1.0)
    targeted = np.arange(1, y.size + 1) / y.size
    return np.concatenate([[0.0], targeted]), np.concatenate([[0.0], captured])


def _decile_lift(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Positive rate in each score decile (highest first) ÷ the overall rate."""
    order = np.argsort(-scores, kind="stable")
    overall = y.mean()
    if overall == 0:
        return np.full(10, np.nan)
    return np.array([y[part].mean() / overall if part.size else np.nan for part in np.array_split(order, 10)])


def lift_figure(
    y_true: object, scores: Mapping[str, object], *, stacked: bool = False, font_size: float | None = None
) -> Figure:
    """Cumulative gains and lift by decile for the model and its baselines, on the same rows. `stacked`
    draws lift below gains in a figure half as wide, and `font_size` (points) sets its text: for a page
    column, where the wide figure shrinks its text to ~6 px."""
    from matplotlib import rc_context

    with rc_context({"font.size": font_size} if font_size else {}):
        return _lift_figure(np.asarray(y_true, dtype="float64").ravel(), scores, stacked)


def _lift_figure(y: np.ndarray, scores: Mapping[str, object], stacked: bool) -> Figure:
    figure = _new_figure(6.0, 7.5) if stacked else _new_figure(11.0, 4.5)
    gains_axes, lift_axes = figure.subplots(2, 1) if stacked else figure.subplots(1, 2)
    gains_axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    deciles = np.arange(1, 11)
    width = 0.8 / max(len(scores), 1)
    for position, (name, values) in enumerate(scores.items()):
        score = np.asarray(values, dtype="float64").ravel()
        if score.size != y.size:
            raise ValueError(f"scores {name!r} have {score.size} rows but y_true has {y.size}")
        targeted, captured = _gains(y, score)
        gains_axes.plot(targeted, captured, label=name)
        lift_axes.bar(
            deciles - 0.4 + width * (position + 0.5), _decile_lift(y, score), width=width, label=name
        )
    gains_axes.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="share of users targeted (highest score first)",
        ylabel="share of positives captured",
        title="Cumulative gains",
    )
    gains_axes.legend(loc="lower right")
    lift_axes.axhline(1.0, linestyle="--", color="grey")
    lift_axes.set(xticks=deciles, xlabel="score decile (1 = highest)", ylabel="lift", title="Lift by decile")
    lift_axes.legend(loc="upper right")
    return figure


def shap_beeswarm_figure(contributions: np.ndarray, X: pd.DataFrame, max_display: int = 20) -> Figure:
    """SHAP beeswarm of precomputed contributions (LightGBM `pred_contrib`, bias column optional).

    Categorical columns are coloured by their category codes, since shap colours by numeric value.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        # Choose a non-interactive backend only if nobody chose one; pyplot is needed because shap
        # draws on pyplot's current figure.
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        # shap 0.51 builds its colormaps at import with calls matplotlib 3.11 marks as pending removal.
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="shap")
        import shap

    values = _feature_contributions(contributions, X)
    plt.figure()
    with warnings.catch_warnings():
        # An all-missing feature has no colour scale; shap plots it grey after numpy warns.
        warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
        shap.summary_plot(
            values,
            features=_numeric_view(X),
            feature_names=[str(column) for column in X.columns],
            max_display=max_display,
            show=False,
            rng=np.random.default_rng(0),
        )
    figure = plt.gcf()
    # Detach from pyplot's registry: the Figure stays drawable, and long jobs do not pile up figures.
    plt.close(figure)
    return figure


def shap_dependence_figures(contributions: np.ndarray, X: pd.DataFrame, top_k: int = 3) -> dict[str, Figure]:
    """One scatter of feature value against its contribution for each of the top-k features.

    Features are ranked by mean |contribution|. Categorical features are plotted at their category
    codes with the category names as tick labels; rows with a missing value are counted in the title.
    """
    values = _feature_contributions(contributions, X)
    ranking = np.argsort(-np.abs(values).mean(axis=0), kind="stable")[:top_k]
    figures: dict[str, Figure] = {}
    for column_index in ranking:
        name = str(X.columns[column_index])
        series = X.iloc[:, column_index]
        figure = _new_figure(6.0, 4.5)
        axes = figure.subplots()
        if _is_categorical(series):
            feature_values, labels = _codes(series)
            axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        else:
            feature_values = series.astype("float64").to_numpy()
        present = ~np.isnan(feature_values)
        axes.scatter(feature_values[present], values[present, column_index], s=8, alpha=0.5)
        axes.axhline(0.0, color="grey", linewidth=0.8)
        missing = int((~present).sum())
        title = f"SHAP dependence: {name}" + (f" ({missing} missing not shown)" if missing else "")
        axes.set(xlabel=name, ylabel="contribution (log-odds)", title=title)
        figures[name] = figure
    return figures


def importance_figure(
    names: Sequence[str], gains: Sequence[float], top_n: int = MAX_IMPORTANCE_BARS
) -> Figure:
    """Horizontal bars of total split gain for the top `top_n` features, largest at the top."""
    gain_values = np.asarray(gains, dtype="float64").ravel()
    if len(names) != gain_values.size:
        raise ValueError(f"{len(names)} names but {gain_values.size} gains")
    order = np.argsort(-gain_values, kind="stable")[:top_n][::-1]
    figure = _new_figure(7.0, max(2.5, 0.28 * order.size + 1.0))
    axes = figure.subplots()
    axes.barh([str(names[i]) for i in order], gain_values[order])
    axes.set(xlabel="total gain", title=f"Feature importance (top {order.size} by gain)")
    return figure


STAGE_COLOURS = {
    "new": "#4e79a7", "growing": "#59a14f", "mature": "#76b7b2", "at_risk": "#f28e2b",
    "dormant": "#9c9c9c", "reactivated": "#b07aa1",
}  # fmt: skip


def waterfall_figure(
    base_value: float,
    contributions: Sequence[float],
    labels: Sequence[str],
    *,
    top_k: int = 10,
    title: str = "Why this score",
) -> Figure:
    """A SHAP waterfall for one prediction: from the model's base value, each of the `top_k` largest
    contributions (log-odds) in turn, the rest summed into one bar, ending at the raw score. The bars sum
    exactly to the raw score, as LightGBM's `pred_contrib` does."""
    values = np.asarray(contributions, dtype="float64").ravel()
    if values.size != len(labels):
        raise ValueError(f"{values.size} contributions but {len(labels)} labels")
    order = np.argsort(-np.abs(values), kind="stable")
    shown = order[:top_k]
    rest = values[order[top_k:]].sum()
    names = [str(labels[i]) for i in shown]
    steps = list(values[shown])
    if order.size > top_k:
        names.append(f"{order.size - top_k} other features")
        steps.append(float(rest))
    raw = float(base_value + values.sum())
    figure = _new_figure(7.5, max(2.6, 0.42 * len(steps) + 1.4))
    axes = figure.subplots()
    start = float(base_value)
    rows = np.arange(len(steps))[::-1]
    for row, step in zip(rows, steps, strict=True):
        colour = "#d62728" if step > 0 else "#1f77b4"
        axes.barh(row, step, left=start, color=colour, height=0.6)
        axes.annotate(f"{step:+.3f}", (start + step, row), xytext=(4 if step > 0 else -4, 0),
                      textcoords="offset points", va="center", ha="left" if step > 0 else "right",
                      fontsize=8)  # fmt: skip
        start += step
    axes.set_yticks(rows, names, fontsize=8)
    path = np.concatenate([[base_value], base_value + np.cumsum(steps)])
    low, high = float(path.min()), float(path.max())
    pad = 0.18 * (high - low) + 1e-6
    axes.set_xlim(low - pad, high + pad)
    axes.axvline(float(base_value), color="grey", linestyle=":", linewidth=1)
    axes.axvline(raw, color="black", linewidth=1)
    probability = 1.0 / (1.0 + np.exp(-raw))
    axes.set(
        xlabel=f"log-odds: base {base_value:.3f} → raw score {raw:.3f} (uncalibrated probability {probability:.2f})",
        title=title,
    )
    return figure


def stage_share_figure(counts: pd.DataFrame, *, title: str = "Stage mix by cutoff") -> Figure:
    """Stacked bars of users per stage (columns) at each cutoff (rows), in the frame's column order."""
    figure = _new_figure(8.0, 4.2)
    axes = figure.subplots()
    labels = [str(index) for index in counts.index]
    bottom = np.zeros(len(counts))
    for stage in counts.columns:
        heights = counts[stage].to_numpy(dtype="float64")
        axes.bar(labels, heights, bottom=bottom, label=str(stage), color=STAGE_COLOURS.get(str(stage)))
        bottom += heights
    axes.set(xlabel="cutoff", ylabel="users", title=title)
    axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return figure


def action_mix_figure(mix: pd.DataFrame, *, title: str = "Actions chosen", currency: str = "") -> Figure:
    """Users per action (bars) with the total expected value (in `currency`) written beside each bar. `mix`
    has the columns action, users and expected_value."""
    figure = _new_figure(7.5, max(2.6, 0.35 * len(mix) + 1.2))
    axes = figure.subplots()
    rows = np.arange(len(mix))[::-1]
    axes.barh(rows, mix["users"].to_numpy(dtype="float64"), color="#4e79a7")
    for row, users, value in zip(rows, mix["users"], mix["expected_value"], strict=True):
        axes.annotate(f"{int(users):,} · EV {value:,.0f} {currency}".rstrip(), (users, row), xytext=(4, 0),
                      textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    axes.set_yticks(rows, [str(a) for a in mix["action"]], fontsize=8)
    axes.set(xlabel="users", title=title)
    axes.margins(x=0.25)
    return figure


def score_distribution_figure(scores: Mapping[str, object], *, title: str = "Score distributions") -> Figure:
    """One histogram per named probability (e.g. churn, upgrade), 20 bins over the scores' own range."""
    figure = _new_figure(4.2 * max(len(scores), 1), 3.4)
    axes_list = np.atleast_1d(figure.subplots(1, max(len(scores), 1)))
    for axes, (name, values) in zip(axes_list, scores.items(), strict=True):
        p = np.asarray(values, dtype="float64").ravel()
        axes.hist(p[np.isfinite(p)], bins=20, range=score_axis_range(p), color="#4e79a7")
        axes.set(xlabel=f"{name} probability", ylabel="users", title=f"{name} (median {np.nanmedian(p):.3f})")
    figure.suptitle(title)
    return figure


_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_SVG_NAMESPACES = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_SVG_IDS = re.compile(r'\bid="([^"]+)"')
_SVG_STYLE_ELEMENT = re.compile(r"<style[^>]*>\s*\*\s*\{([^}]*)\}\s*</style>\s*")
_SVG_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')


def _as_attributes(declarations: str) -> str:
    """CSS declarations (`fill: #fff; stroke-width: 0.8`) as SVG presentation attributes."""
    pairs = (part.split(":", 1) for part in declarations.split(";") if ":" in part)
    return "".join(f' {name.strip()}="{value.strip()}"' for name, value in pairs)


def _without_inline_css(markup: str) -> str:
    """SVG markup with matplotlib's `style` attributes as presentation attributes and its one `<style>` rule
    (`*{stroke-linejoin…}`, inherited properties) on the root element: the same drawing, which a page whose
    Content-Security-Policy forbids inline style renders without a violation."""
    rule = _SVG_STYLE_ELEMENT.search(markup)
    if rule is not None:
        markup = markup[: rule.start()] + markup[rule.end() :]
        markup = "<svg" + _as_attributes(rule.group(1)) + markup[len("<svg") :]
    return _SVG_STYLE_ATTRIBUTE.sub(lambda match: _as_attributes(match.group(1)), markup)


def figure_svg(fig: Figure, scope: str | None = None) -> str:
    """The figure as inline SVG markup for an HTML page, then released: text kept as text (small,
    searchable), without matplotlib's RDF metadata and namespace declarations (URLs an HTML parser does
    not need), without inline CSS (styles as presentation attributes, so a strict CSP draws it), and with
    its element ids prefixed by `scope` when given, so that ids repeated across the figures of one page
    (clip paths, markers) cannot resolve to another figure's. Needs no network."""
    import io

    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "clm"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    text = buffer.getvalue()
    markup = _without_inline_css(_SVG_NAMESPACES.sub("", _SVG_METADATA.sub("", text[text.index("<svg") :])))
    if scope is None:
        return markup
    ids = set(_SVG_IDS.findall(markup))

    def scoped(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{scope}-{name}" if name in ids else match.group(0)

    markup = re.sub(r'(\bid=")([^"]+)', scoped, markup)
    return re.sub(r"(#)([\w.:-]+)", scoped, markup)


def figure_png_data_uri(fig: Figure, *, dpi: int = PNG_DPI) -> str:
    """The figure as a `data:image/png;base64,…` URI, then released: for figures with thousands of marks
    (the SHAP beeswarm), where inline SVG would be far larger. Needs no server and no network."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write the figure as PNG (dpi 110), creating the directory, then release it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png", dpi=PNG_DPI)
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return target


# How the figures' words read in Chinese (`relabel`): whole texts, then patterns for texts with numbers in them.
FIGURE_TEXT_ZH: dict[str, str] = {
    "cutoff": "截止日期", "users": "用户数", "rows": "行数", "Stage mix by cutoff": "各截止日期的阶段分布",
    "Actions chosen": "选定的动作", "Score distributions": "评分分布", "churn probability": "流失概率",
    "upgrade probability": "升级概率", "perfectly calibrated": "完美校准", "observed positive rate": "观察到的正例比例",
    "predicted probability": "预测概率", "predicted probability (the scores' range)": "预测概率（评分范围）", "before": "校准前", "after": "校准后", "calibrated": "校准后",
    "random": "随机", "churn model": "流失模型", "share of users targeted (highest score first)": "目标用户占比（按评分从高到低）",
    "share of positives captured": "捕获的正例占比", "Cumulative gains": "累积增益",
    "score decile (1 = highest)": "评分十分位（1 = 最高）", "lift": "提升度", "Lift by decile": "各十分位的提升度",
}  # fmt: skip
FIGURE_PATTERNS_ZH: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^before \(ECE ([\d.]+)\)$", r"校准前（ECE \1）"),
        (r"^before \(ECE ([\d.]+); ([\d.]+) on these bins\)$", r"校准前（ECE \1；所画分箱上 \2）"),
        (r"^(?:after|calibrated) \(ECE ([\d.]+); ([\d.]+) on these bins\)$", r"校准后（ECE \1；所画分箱上 \2）"),
        (r"^bin of < (\d+) users: unreliable$", r"不足 \1 位用户的分箱：不可靠"),
        (r"^(?:after|calibrated) \(ECE ([\d.]+)\)$", r"校准后（ECE \1）"),
        (r"^Calibration on the (\S+) cutoff \(([\d,]+) users, labels known\)$", r"\1 截止日期的校准（\2 位用户，标签已知）"),
        (r"^churn \(median ([\d.]+)\)$", r"流失（中位数 \1）"),
        (r"^upgrade \(median ([\d.]+)\)$", r"升级（中位数 \1）"),
        (r"^([\d,]+) · EV (.+)$", r"\1 · 期望价值 \2"),
        (r"^(.+): SHAP waterfall \(log-odds\)$", r"\1：SHAP 瀑布图（对数几率）"),
        (r"^log-odds: base (\S+) → raw score (\S+) \(uncalibrated probability (\S+)\)$",
         r"对数几率：基准 \1 → 原始评分 \2（未校准概率 \3）"),
        (r"^(\d+) other features$", r"其余 \1 个特征"),
        (r"^(.+) = missing$", r"\1 = 缺失"),
    )
)  # fmt: skip


def figure_text(text: str, lang: str) -> str:
    """One of the figures' texts in `lang`: stage and action names by their Chinese names, the words above
    by theirs; English, and any text not known here, as it is."""
    if lang != "zh" or not text:
        return text
    from models.catalog import ACTION_NAMES_ZH
    from models.stages import STAGE_NAMES_ZH

    known = FIGURE_TEXT_ZH.get(text) or STAGE_NAMES_ZH.get(text) or ACTION_NAMES_ZH.get(text)
    if known:
        return known
    for pattern, replacement in FIGURE_PATTERNS_ZH:
        if pattern.match(text):
            return pattern.sub(replacement, text)
    return text


# Fonts with Chinese glyphs, the first installed one the fallback of a Chinese figure's text (the page's browser
# draws the SVG's text itself; matplotlib needs the glyphs only to measure it).
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "SimHei")


def _cjk_font() -> str | None:
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def relabel(fig: Figure, lang: str) -> Figure:
    """The figure with its titles, axis labels, tick labels set by name, legend entries and annotations in
    `lang` (`figure_text`): a figure is drawn once, in English, and relabelled for each other language."""
    from matplotlib.axis import Axis
    from matplotlib.text import Text
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    if lang == "en":
        return fig
    for axes in fig.axes:
        for axis in (axes.xaxis, axes.yaxis):
            if not isinstance(axis.get_major_formatter(), FixedFormatter | FuncFormatter):
                continue  # numbers
            labels = [label.get_text() for label in axis.get_ticklabels()]
            said = [figure_text(label, lang) for label in labels]
            if said != labels:
                axis.set_ticks(axis.get_ticklocs(), said)
    ticks = {id(t) for a in fig.findobj(Axis) for t in a.get_ticklabels(which="both")}
    fallback = _cjk_font() if lang == "zh" else None
    for text in fig.findobj(Text):
        if fallback is not None:
            text.set_fontfamily([*text.get_fontfamily(), fallback])
        if id(text) not in ticks:
            text.set_text(figure_text(text.get_text(), lang))
    return fig
