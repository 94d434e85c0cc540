"""The feature registry: the single list of every feature's name, dtype, window, unit, meaning, risk
direction and plain-language reason (English and Chinese). Training, the model signature, the API
schema and the explanations all read it; nobody re-types the feature list.

The list is a function of the feature parameters (windows, event types) from the config, so adding a
window in the config adds its features everywhere without code.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

Dtype = Literal["float64", "category"]
# Plan changes are counted over this fixed window whatever the configured windows are.
PLAN_CHANGE_WINDOW_DAYS = 90
Direction = Literal[1, -1, 0]


@dataclass(frozen=True)
class FeatureParams:
    """Everything the feature definitions depend on (the config's `[features]` table)."""

    windows_days: tuple[int, ...] = (7, 30, 90)
    trend_window_days: int = 30
    count_event_types: tuple[str, ...] = ("login", "feature_use", "purchase", "support_ticket")
    login_like_event_types: tuple[str, ...] = ("login", "feature_use")
    purchase_event_types: tuple[str, ...] = ("purchase",)
    support_event_types: tuple[str, ...] = ("support_ticket",)
    plan_change_event_types: tuple[str, ...] = ("upgrade", "downgrade")
    cancel_event_types: tuple[str, ...] = ("cancel",)
    plan_order: tuple[str, ...] = ("free", "basic", "pro")
    no_subscription_plan: str = "free"
    bill_period_days: int = 30
    rfm_buckets: int = 5

    def __post_init__(self) -> None:
        if not self.windows_days or any(w <= 0 for w in self.windows_days):
            raise ValueError(f"windows_days must be positive day counts, got {self.windows_days}")
        if self.trend_window_days <= 0:
            raise ValueError("trend_window_days must be positive")

    @property
    def offsets_days(self) -> tuple[int, ...]:
        """Every distance before a cutoff at which a cumulative total is needed."""
        trend = self.trend_window_days
        return tuple(sorted({0, *self.windows_days, trend, 2 * trend, PLAN_CHANGE_WINDOW_DAYS}))

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> FeatureParams:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k in known}
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Feature:
    """One feature. `risk_direction` is +1 when larger values usually mean more churn risk, -1 when
    less, 0 when it depends; models may enforce it as a monotone constraint."""

    name: str
    dtype: Dtype
    family: str
    description: str
    unit: str
    window_days: int | None
    risk_direction: Direction
    reason_en: str
    reason_zh: str
    categories: tuple[str, ...] = field(default=())
    description_zh: str = ""

    def reason(self, value: float | str | None, lang: str = "en") -> str:
        """The plain-language reason for this feature's value, e.g. "No activity for 12 days"."""
        template = self.reason_zh if lang == "zh" else self.reason_en
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing = "：没有记录" if lang == "zh" else ": no record"
            return f"{self.description_for(lang)}{missing}"
        if self.dtype == "category":
            return template.format(value=value, window=self.window_days)
        number = float(value)
        return template.format(value=number, abs=abs(number), window=self.window_days)

    def description_for(self, lang: str) -> str:
        return self.description_zh if lang == "zh" else self.description


def _spans(window: int | None) -> tuple[str, str]:
    """How a window reads in a reason, in English and Chinese."""
    return ("ever", "历史上") if window is None else (f"in the last {window} days", f"最近{window}天")


def _window_label(window: int | None) -> str:
    return "total" if window is None else f"{window}d"


# How the default event types read in Chinese; an event type configured beyond these keeps its own name.
EVENT_LABELS_ZH: dict[str, str] = {
    "login": "登录",
    "feature_use": "功能使用",
    "purchase": "购买",
    "support_ticket": "客服工单",
    "upgrade": "升级",
    "downgrade": "降级",
    "cancel": "取消",
}


def _count_feature(event_type: str, window: int | None, support: bool) -> Feature:
    span_en, span_zh = _spans(window)
    label = event_type.replace("_", " ")
    label_zh = EVENT_LABELS_ZH.get(event_type, label)
    return Feature(
        name=f"{event_type}_count_{_window_label(window)}",
        dtype="float64",
        family="service" if support else "frequency",
        description=f"Number of {label} events {span_en}",
        unit="events",
        window_days=window,
        risk_direction=1 if support else -1,
        reason_en=f"{{value:.0f}} {label} events {span_en}",
        reason_zh=f"{span_zh}有{{value:.0f}}次{label_zh}",
        description_zh=f"{span_zh}的{label_zh}次数",
    )


def build_registry(params: FeatureParams | None = None) -> tuple[Feature, ...]:
    """Every feature, in the order of the feature table's columns."""
    p = params or FeatureParams()
    windows: list[int | None] = [*sorted(p.windows_days), None]
    trend = p.trend_window_days
    out: list[Feature] = [
        Feature("days_since_last_event", "float64", "recency", "Days since the last event of any kind", "days",
                None, 1, "No activity for {value:.0f} days", "已经{value:.0f}天没有任何活动", description_zh="距上次活动的天数"),
        Feature("days_since_last_login", "float64", "recency", "Days since the last login-like event", "days",
                None, 1, "Last login {value:.0f} days ago", "最近一次登录在{value:.0f}天前", description_zh="距上次登录的天数"),
        Feature("days_since_last_purchase", "float64", "recency", "Days since the last purchase", "days",
                None, 1, "Last purchase {value:.0f} days ago", "最近一次购买在{value:.0f}天前", description_zh="距上次购买的天数"),
        Feature("tenure_days", "float64", "tenure", "Days since signup (or the first event)", "days",
                None, -1, "Customer for {value:.0f} days", "已成为用户{value:.0f}天", description_zh="注册天数"),
    ]  # fmt: skip
    for window in windows:
        span_en, span_zh = _spans(window)
        lbl = _window_label(window)
        out.append(Feature(f"events_count_{lbl}", "float64", "frequency", f"Number of events {span_en}", "events",
                           window, -1, f"{{value:.0f}} events {span_en}", f"{span_zh}共{{value:.0f}}次活动", description_zh=f"{span_zh}的活动次数"))  # fmt: skip
        out.append(Feature(f"active_days_{lbl}", "float64", "frequency", f"Distinct active days {span_en}", "days",
                           window, -1, f"Active on {{value:.0f}} days {span_en}", f"{span_zh}活跃了{{value:.0f}}天", description_zh=f"{span_zh}的活跃天数"))  # fmt: skip
        for event_type in p.count_event_types:
            out.append(_count_feature(event_type, window, event_type in p.support_event_types))
        out.append(Feature(f"revenue_sum_{lbl}", "float64", "monetary", f"Revenue {span_en}", "currency",
                           window, -1, f"Spent {{value:.2f}} {span_en}", f"{span_zh}消费{{value:.2f}}", description_zh=f"{span_zh}的消费金额"))  # fmt: skip
        out.append(Feature(f"revenue_mean_{lbl}", "float64", "monetary", f"Mean purchase value {span_en}",
                           "currency", window, -1, f"Average purchase {{value:.2f}} {span_en}",
                           f"{span_zh}平均每单{{value:.2f}}", description_zh=f"{span_zh}的平均订单金额"))  # fmt: skip
    out += [
        Feature(f"activity_change_pct_{trend}d", "float64", "trend",
                f"Change in active days, last {trend} days vs the {trend} before (%)", "percent", trend, -1,
                f"Activity in the last {trend} days changed {{value:+.0f}}% against the {trend} days before",
                f"最近{trend}天活跃度比前{trend}天变化了{{value:+.0f}}%", description_zh=f"最近{trend}天活跃度的变化（%）"),
        Feature(f"activity_diff_{trend}d", "float64", "trend",
                f"Active days in the last {trend} days minus the {trend} before", "days", trend, -1,
                f"{{value:+.0f}} active days against the {trend} days before",
                f"活跃天数比前{trend}天变化{{value:+.0f}}天", description_zh=f"最近{trend}天活跃天数的变化"),
        Feature(f"revenue_change_pct_{trend}d", "float64", "trend",
                f"Change in revenue, last {trend} days vs the {trend} before (%)", "percent", trend, -1,
                f"Spending in the last {trend} days changed {{value:+.0f}}% against the {trend} days before",
                f"最近{trend}天消费比前{trend}天变化了{{value:+.0f}}%", description_zh=f"最近{trend}天消费的变化（%）"),
        Feature(f"revenue_diff_{trend}d", "float64", "trend",
                f"Revenue in the last {trend} days minus the {trend} before", "currency", trend, -1,
                f"Spending changed by {{value:+.2f}} against the {trend} days before",
                f"消费金额比前{trend}天变化{{value:+.2f}}", description_zh=f"最近{trend}天消费金额的变化"),
        Feature("gap_mean_days", "float64", "cadence", "Mean gap between active days", "days", None, 1,
                "Usually active every {value:.1f} days", "通常每{value:.1f}天活跃一次", description_zh="活跃间隔的平均天数"),
        Feature("gap_std_days", "float64", "cadence", "Standard deviation of the gap between active days", "days",
                None, 0, "Gaps between visits vary by {value:.1f} days", "活跃间隔波动{value:.1f}天", description_zh="活跃间隔的波动"),
        Feature("gap_ratio", "float64", "cadence", "Current gap divided by the typical gap (overdue-ness)", "ratio",
                None, 1, "Current absence is {value:.1f}× the usual gap", "本次未活跃时长是平时间隔的{value:.1f}倍", description_zh="本次未活跃时长与平时间隔之比"),
        Feature("current_plan", "category", "plan", "Plan at the cutoff", "", None, 0,
                "On the {value} plan", "当前套餐为{value}", categories=p.plan_order, description_zh="当前套餐"),
        Feature("plan_rank", "float64", "plan", "Rank of the current plan (0 = lowest)", "rank", None, 0,
                "Plan level {value:.0f}", "套餐等级{value:.0f}", description_zh="套餐等级"),
        Feature("mrr", "float64", "plan", "Monthly recurring revenue of the active subscription", "currency", None,
                0, "Pays {value:.2f} a month", "每月付费{value:.2f}", description_zh="每月付费"),
        Feature("subscription_periods", "float64", "plan", "Subscription periods started before the cutoff",
                "periods", None, 0, "{value:.0f} subscription periods so far", "已有{value:.0f}个订阅周期", description_zh="订阅周期数"),
        Feature("plan_changes_total", "float64", "plan", "Upgrades and downgrades ever", "changes", None, 0,
                "{value:.0f} plan changes so far", "共变更套餐{value:.0f}次", description_zh="套餐变更次数"),
        Feature(f"plan_changes_{PLAN_CHANGE_WINDOW_DAYS}d", "float64", "plan",
                f"Upgrades and downgrades in the last {PLAN_CHANGE_WINDOW_DAYS} days", "changes",
                PLAN_CHANGE_WINDOW_DAYS, 0, f"{{value:.0f}} plan changes in the last {PLAN_CHANGE_WINDOW_DAYS} days",
                f"最近{PLAN_CHANGE_WINDOW_DAYS}天变更套餐{{value:.0f}}次", description_zh=f"最近{PLAN_CHANGE_WINDOW_DAYS}天的套餐变更次数"),
        Feature("bill_period_days", "float64", "plan", "Billing period of the active subscription", "days", None,
                0, "Billed every {value:.0f} days", "每{value:.0f}天计费一次", description_zh="计费周期"),
        Feature("days_to_renewal", "float64", "plan", "Days until the active subscription renews", "days", None, 0,
                "Renews in {value:.0f} days", "{value:.0f}天后续费", description_zh="距续费的天数"),
    ]  # fmt: skip
    for window in windows:
        span_en, span_zh = _spans(window)
        out.append(Feature(f"contacts_count_{_window_label(window)}", "float64", "contacts",
                           f"Campaign contacts received {span_en}", "contacts", window, 0,
                           f"Contacted {{value:.0f}} times {span_en}", f"{span_zh}被联系{{value:.0f}}次", description_zh=f"{span_zh}被联系的次数"))  # fmt: skip
    out += [
        Feature("days_since_last_contact", "float64", "contacts", "Days since the last campaign contact", "days",
                None, 0, "Last contacted {value:.0f} days ago", "最近一次联系在{value:.0f}天前", description_zh="距上次联系的天数"),
        Feature("last_action", "category", "contacts", "The last action received", "", None, 0,
                "Last received: {value}", "最近一次收到：{value}", description_zh="最近一次收到的干预"),
        Feature("rfm_recency_score", "float64", "rfm", "RFM recency score (5 = most recent, 0 = never bought)",
                "score", None, -1, "Recency score {value:.0f} of 5", "最近购买得分{value:.0f}/5", description_zh="RFM最近购买得分"),
        Feature("rfm_frequency_score", "float64", "rfm", "RFM frequency score (5 = most purchases)", "score", None,
                -1, "Frequency score {value:.0f} of 5", "购买频次得分{value:.0f}/5", description_zh="RFM购买频次得分"),
        Feature("rfm_monetary_score", "float64", "rfm", "RFM monetary score (5 = highest spend)", "score", None, -1,
                "Monetary score {value:.0f} of 5", "消费金额得分{value:.0f}/5", description_zh="RFM消费金额得分"),
        Feature("rfm_segment", "category", "rfm", "RFM segment", "", None, 0, "RFM segment: {value}",
                "RFM分群：{value}", categories=RFM_SEGMENTS, description_zh="RFM分群"),
    ]  # fmt: skip
    names = [f.name for f in out]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"feature names defined twice: {sorted(duplicates)}")
    return tuple(out)


RFM_SEGMENTS: tuple[str, ...] = (
    "Champions", "Loyal", "Potential Loyalists", "New Customers", "Promising", "Need Attention",
    "About to Sleep", "At Risk", "Can't Lose", "Hibernating", "No Purchase Yet",
)  # fmt: skip


def rfm_segment(recency_score: int, frequency_score: int) -> str:
    """The classic R×F grid; 0 scores mean no purchase yet."""
    r, f = recency_score, frequency_score
    if r == 0 or f == 0:
        return "No Purchase Yet"
    for segment, (r_range, f_range) in RFM_GRID.items():
        if r in r_range and f in f_range:
            return segment
    raise ValueError(f"RFM scores out of range: R={r}, F={f}")


# (recency scores, frequency scores) per segment; every (R, F) in 1..5 × 1..5 lands in exactly one.
RFM_GRID: dict[str, tuple[range, range]] = {
    "Champions": (range(5, 6), range(4, 6)),
    "Loyal": (range(3, 5), range(4, 6)),
    "Potential Loyalists": (range(4, 6), range(2, 4)),
    "New Customers": (range(5, 6), range(1, 2)),
    "Promising": (range(4, 5), range(1, 2)),
    "Need Attention": (range(3, 4), range(3, 4)),
    "About to Sleep": (range(3, 4), range(1, 3)),
    "At Risk": (range(1, 3), range(3, 5)),
    "Can't Lose": (range(1, 3), range(5, 6)),
    "Hibernating": (range(1, 3), range(1, 3)),
}


def feature_names(registry: Sequence[Feature]) -> list[str]:
    return [f.name for f in registry]


def by_name(registry: Sequence[Feature]) -> dict[str, Feature]:
    return {f.name: f for f in registry}


def registry_version(registry: Sequence[Feature]) -> str:
    """A short hash of names, dtypes and windows: it changes whenever the feature vector's meaning does."""
    blob = json.dumps([(f.name, f.dtype, f.window_days) for f in registry]).encode()
    return "f-" + hashlib.sha256(blob).hexdigest()[:10]


def as_records(registry: Sequence[Feature]) -> Iterator[dict]:
    for feature in registry:
        record = asdict(feature)
        record["categories"] = list(feature.categories)
        yield record
