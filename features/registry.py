"""The feature registry: the single list of every feature's name, dtype, window, unit, meaning, risk
direction and plain-language reason (English and Chinese). Training, the model signature, the API
schema and the explanations all read it; nobody re-types the feature list.

The list is a function of the feature parameters (windows, event types) from the config, so adding a
window in the config adds its features everywhere without code.

Each entry also carries `build(t, params)`, the Ibis expression of its column, so a feature is defined
in one place: `features.build` only prepares the per-(user, cutoff) context table `t` the builders read
and evaluates every entry. The context's columns:

- `cutoff_day`; `first_day` (first event or signup); `last_event_day`, `last_login_day`,
  `last_purchase_day`, `last_contact_day` (epoch days, null when none); `first_purchase_neg_day` (the
  first purchase's epoch day, negated);
- `<metric>_at_<offset>`: the metric's total over everything strictly before cutoff − offset days, for
  every offset in `FeatureParams.offsets_days` (`gap`, `gap_sq`, `has_gap` at 0 only); metrics `n_events`,
  `active` (active days), `revenue`, `n_purchases`, `purchase_days` (days with a purchase), `contacts` and
  `n_<event type>` per counted type;
- the subscription at the cutoff: `subscriptions_known` (whether the input exists), `active_plan`,
  `active_mrr`, `last_mrr` (the latest subscription started, active or not), `active_elapsed` (days
  since its start), `has_active`, `periods_started`, and
  `signup_plan` (users' plan, null without it); `contact_last_action` (the last contact's action);
- `_q<r|f|m><i>`: the RFM quantile thresholds among buyers at the cutoff (see `rfm_measures`).

Ibis is imported inside the builders only: reading the registry (serving, the CLI) does not load it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Literal

from features.config import FeaturesSection

Dtype = Literal["float64", "category"]
# Plan changes are counted over this fixed window whatever the configured windows are.
PLAN_CHANGE_WINDOW_DAYS = 90
Direction = Literal[1, -1, 0]
# (context table, params) -> the column's Ibis expression; module-level functions and partials, so a
# Feature still pickles
ColumnBuilder = Callable[[Any, "FeatureParams"], Any]


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
    def from_config(cls, section: FeaturesSection) -> FeatureParams:
        """The config's `[features]` table."""
        return cls(
            windows_days=tuple(section.windows_days),
            trend_window_days=section.trend_window_days,
            count_event_types=tuple(section.count_event_types),
            login_like_event_types=tuple(section.login_like_event_types),
            purchase_event_types=tuple(section.purchase_event_types),
            support_event_types=tuple(section.support_event_types),
            plan_change_event_types=tuple(section.plan_change_event_types),
            cancel_event_types=tuple(section.cancel_event_types),
            plan_order=tuple(section.plan_order),
            no_subscription_plan=section.no_subscription_plan,
            bill_period_days=section.bill_period_days,
            rfm_buckets=section.rfm_buckets,
        )


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
    build: ColumnBuilder | None = field(default=None, compare=False, repr=False)

    def reason(self, value: float | str | None, lang: str = "en", currency: str | None = None) -> str:
        """The plain-language reason for this feature's value, e.g. "No activity for 12 days". Templates
        name money `{money}` (`{signed_money}` with its sign), written with `currency` (`money_text`), and
        an English count's plural ending `{s}` ("1 day", "2 days")."""
        template = self.reason_zh if lang == "zh" else self.reason_en
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing = "：没有记录" if lang == "zh" else ": no record"
            return f"{self.description_for(lang)}{missing}"
        if self.dtype == "category":
            shown = RFM_SEGMENTS_ZH.get(str(value), value) if lang == "zh" else value
            return template.format(value=shown, window=self.window_days)
        number = float(value)
        return template.format(
            value=number, abs=abs(number), window=self.window_days, s="" if f"{abs(number):.0f}" == "1" else "s",
            money=money_text(number, currency), signed_money=money_text(number, currency, signed=True),
        )  # fmt: skip

    def description_for(self, lang: str) -> str:
        return self.description_zh if lang == "zh" else self.description


def number_text(number: float, digits: int = 2, *, signed: bool = False) -> str:
    """A number with `digits` decimals and thousands separated, as the texts and pages show it: one that
    rounds to zero as 0.00, never −0.00; `signed` writes a + before a positive one."""
    value = float(number)
    if round(value, digits) == 0:
        value = 0.0
    return f"{value:+,.{digits}f}" if signed and value != 0 else f"{value:,.{digits}f}"


def money_text(amount: float, currency: str | None, *, digits: int = 2, signed: bool = False) -> str:
    """An amount of money as every text shows it: "5.30 USD" (`number_text`, the currency code after it; the
    bare number when no currency is given)."""
    text = number_text(amount, digits, signed=signed)
    return text if currency is None else f"{text} {currency}"


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
        reason_en=f"{{value:.0f}} {label} event{{s}} {span_en}",
        reason_zh=f"{span_zh}有{{value:.0f}}次{label_zh}",
        description_zh=f"{span_zh}的{label_zh}次数",
        build=partial(_window_count, f"n_{event_type}", window),
    )


def build_registry(params: FeatureParams | None = None) -> tuple[Feature, ...]:
    """Every feature, in the order of the feature table's columns."""
    p = params or FeatureParams()
    windows: list[int | None] = [*sorted(p.windows_days), None]
    trend = p.trend_window_days
    out: list[Feature] = [
        Feature("days_since_last_event", "float64", "recency", "Days since the last event of any kind", "days",
                None, 1, "No activity for {value:.0f} day{s}", "已经{value:.0f}天没有任何活动", description_zh="距上次活动的天数",
                build=partial(_days_since, "last_event_day")),
        Feature("days_since_last_login", "float64", "recency", "Days since the last login-like event", "days",
                None, 1, "Last login {value:.0f} day{s} ago", "最近一次登录在{value:.0f}天前", description_zh="距上次登录的天数",
                build=partial(_days_since, "last_login_day")),
        Feature("days_since_last_purchase", "float64", "recency", "Days since the last purchase", "days",
                None, 1, "Last purchase {value:.0f} day{s} ago", "最近一次购买在{value:.0f}天前", description_zh="距上次购买的天数",
                build=partial(_days_since, "last_purchase_day")),
        Feature("tenure_days", "float64", "tenure", "Days since signup (or the first event)", "days",
                None, -1, "Customer for {value:.0f} day{s}", "已成为用户{value:.0f}天", description_zh="注册天数",
                build=partial(_days_since, "first_day")),
    ]  # fmt: skip
    for window in windows:
        span_en, span_zh = _spans(window)
        lbl = _window_label(window)
        out.append(Feature(f"events_count_{lbl}", "float64", "frequency", f"Number of events {span_en}", "events",
                           window, -1, f"{{value:.0f}} event{{s}} {span_en}", f"{span_zh}共{{value:.0f}}次活动", description_zh=f"{span_zh}的活动次数",
                           build=partial(_window_count, "n_events", window)))  # fmt: skip
        out.append(Feature(f"active_days_{lbl}", "float64", "frequency", f"Distinct active days {span_en}", "days",
                           window, -1, f"Active on {{value:.0f}} day{{s}} {span_en}", f"{span_zh}活跃了{{value:.0f}}天", description_zh=f"{span_zh}的活跃天数",
                           build=partial(_window_count, "active", window)))  # fmt: skip
        for event_type in p.count_event_types:
            out.append(_count_feature(event_type, window, event_type in p.support_event_types))
        out.append(Feature(f"revenue_sum_{lbl}", "float64", "monetary", f"Revenue {span_en}", "currency",
                           window, -1, f"Spent {{money}} {span_en}", f"{span_zh}消费{{money}}", description_zh=f"{span_zh}的消费金额",
                           build=partial(_window_count, "revenue", window)))  # fmt: skip
        out.append(Feature(f"revenue_mean_{lbl}", "float64", "monetary", f"Mean purchase value {span_en}",
                           "currency", window, -1, f"Average purchase {{money}} {span_en}",
                           f"{span_zh}平均每单{{money}}", description_zh=f"{span_zh}的平均订单金额",
                           build=partial(_revenue_mean, window)))  # fmt: skip
    out += [
        Feature(f"activity_change_pct_{trend}d", "float64", "trend",
                f"Change in active days, last {trend} days vs the {trend} before (%)", "percent", trend, -1,
                f"Activity in the last {trend} days changed {{value:+.0f}}% against the {trend} days before",
                f"最近{trend}天活跃度比前{trend}天变化了{{value:+.0f}}%", description_zh=f"最近{trend}天活跃度的变化（%）",
                build=partial(_change_pct, "active")),
        Feature(f"activity_diff_{trend}d", "float64", "trend",
                f"Active days in the last {trend} days minus the {trend} before", "days", trend, -1,
                f"{{value:+.0f}} active day{{s}} against the {trend} days before",
                f"活跃天数比前{trend}天变化{{value:+.0f}}天", description_zh=f"最近{trend}天活跃天数的变化",
                build=partial(_change_diff, "active")),
        Feature(f"revenue_change_pct_{trend}d", "float64", "trend",
                f"Change in revenue, last {trend} days vs the {trend} before (%)", "percent", trend, -1,
                f"Spending in the last {trend} days changed {{value:+.0f}}% against the {trend} days before",
                f"最近{trend}天消费比前{trend}天变化了{{value:+.0f}}%", description_zh=f"最近{trend}天消费的变化（%）",
                build=partial(_change_pct, "revenue")),
        Feature(f"revenue_diff_{trend}d", "float64", "trend",
                f"Revenue in the last {trend} days minus the {trend} before", "currency", trend, -1,
                f"Spending changed by {{signed_money}} against the {trend} days before",
                f"消费金额比前{trend}天变化{{signed_money}}", description_zh=f"最近{trend}天消费金额的变化",
                build=partial(_change_diff, "revenue")),
        Feature("gap_mean_days", "float64", "cadence", "Mean gap between active days", "days", None, 1,
                "Usually active every {value:.1f} days", "通常每{value:.1f}天活跃一次", description_zh="活跃间隔的平均天数", build=_gap_mean),
        Feature("gap_std_days", "float64", "cadence", "Standard deviation of the gap between active days", "days",
                None, 0, "Gaps between visits vary by {value:.1f} days", "活跃间隔波动{value:.1f}天", description_zh="活跃间隔的波动", build=_gap_std),
        Feature("gap_ratio", "float64", "cadence", "Current gap divided by the typical gap (overdue-ness)", "ratio",
                None, 1, "Current absence is {value:.1f}× the usual gap", "本次未活跃时长是平时间隔的{value:.1f}倍", description_zh="本次未活跃时长与平时间隔之比",
                build=_gap_ratio),
        Feature("current_plan", "category", "plan", "Plan at the cutoff", "", None, 0,
                "On the {value} plan", "当前套餐为{value}", categories=p.plan_order, description_zh="当前套餐",
                build=_current_plan),
        Feature("plan_rank", "float64", "plan", "Rank of the current plan (0 = lowest)", "rank", None, 0,
                "Plan level {value:.0f}", "套餐等级{value:.0f}", description_zh="套餐等级", build=_plan_rank),
        Feature("mrr", "float64", "plan", "Monthly recurring revenue of the active subscription", "currency", None,
                0, "Pays {money} a month", "每月付费{money}", description_zh="每月付费", build=_mrr),
        Feature("last_mrr", "float64", "plan", "Monthly recurring revenue of the latest subscription, active or ended",
                "currency", None, 0, "Last paid {money} a month", "上一次订阅每月付费{money}",
                description_zh="最近一次订阅的月费", build=_last_mrr),
        Feature("subscription_periods", "float64", "plan", "Subscription periods started before the cutoff",
                "periods", None, 0, "{value:.0f} subscription period{s} so far", "已有{value:.0f}个订阅周期", description_zh="订阅周期数", build=_subscription_periods),
        Feature("plan_changes_total", "float64", "plan", "Upgrades and downgrades ever", "changes", None, 0,
                "{value:.0f} plan change{s} so far", "共变更套餐{value:.0f}次", description_zh="套餐变更次数",
                build=partial(_plan_changes, None)),
        Feature(f"plan_changes_{PLAN_CHANGE_WINDOW_DAYS}d", "float64", "plan",
                f"Upgrades and downgrades in the last {PLAN_CHANGE_WINDOW_DAYS} days", "changes",
                PLAN_CHANGE_WINDOW_DAYS, 0, f"{{value:.0f}} plan change{{s}} in the last {PLAN_CHANGE_WINDOW_DAYS} days",
                f"最近{PLAN_CHANGE_WINDOW_DAYS}天变更套餐{{value:.0f}}次", description_zh=f"最近{PLAN_CHANGE_WINDOW_DAYS}天的套餐变更次数",
                build=partial(_plan_changes, PLAN_CHANGE_WINDOW_DAYS)),
        Feature("bill_period_days", "float64", "plan", "Billing period of the active subscription", "days", None,
                0, "Billed every {value:.0f} day{s}", "每{value:.0f}天计费一次", description_zh="计费周期", build=_bill_period_days),
        Feature("days_to_renewal", "float64", "plan", "Days until the active subscription renews", "days", None, 0,
                "Renews in {value:.0f} day{s}", "{value:.0f}天后续费", description_zh="距续费的天数", build=_days_to_renewal),
    ]  # fmt: skip
    for window in windows:
        span_en, span_zh = _spans(window)
        out.append(Feature(f"contacts_count_{_window_label(window)}", "float64", "contacts",
                           f"Campaign contacts received {span_en}", "contacts", window, 0,
                           f"Contacted {{value:.0f}} time{{s}} {span_en}", f"{span_zh}被联系{{value:.0f}}次", description_zh=f"{span_zh}被联系的次数",
                           build=partial(_window_count, "contacts", window)))  # fmt: skip
    out += [
        Feature("days_since_last_contact", "float64", "contacts", "Days since the last campaign contact", "days",
                None, 0, "Last contacted {value:.0f} day{s} ago", "最近一次联系在{value:.0f}天前", description_zh="距上次联系的天数",
                build=partial(_days_since, "last_contact_day")),
        Feature("last_action", "category", "contacts", "The last action received", "", None, 0,
                "Last received: {value}", "最近一次收到：{value}", description_zh="最近一次收到的干预", build=_last_action),
        Feature("rfm_recency_score", "float64", "rfm", "RFM recency score (5 = most recent, 0 = never bought)",
                "score", None, -1, "Recency score {value:.0f} of 5", "最近购买得分{value:.0f}/5", description_zh="RFM最近购买得分", build=_rfm_recency_score),
        Feature("rfm_frequency_score", "float64", "rfm", "RFM frequency score (5 = most purchases)", "score", None,
                -1, "Frequency score {value:.0f} of 5", "购买频次得分{value:.0f}/5", description_zh="RFM购买频次得分", build=_rfm_frequency_score),
        Feature("rfm_monetary_score", "float64", "rfm", "RFM monetary score (5 = highest spend)", "score", None, -1,
                "Monetary score {value:.0f} of 5", "消费金额得分{value:.0f}/5", description_zh="RFM消费金额得分", build=_rfm_monetary_score),
        Feature("rfm_segment", "category", "rfm", "RFM segment", "", None, 0, "RFM segment: {value}",
                "RFM分群：{value}", categories=RFM_SEGMENTS, description_zh="RFM分群",
                build=_rfm_segment),
    ]  # fmt: skip
    out += purchase_cycle_features()
    names = [f.name for f in out]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"feature names defined twice: {sorted(duplicates)}")
    return tuple(out)


def purchase_cycle_features() -> list[Feature]:
    """Non-contractual (buy-till-you-die) features: recency and frequency in the customer's own time scale,
    counted in purchase days from the first purchase — T (days since the first purchase), the span from the
    first to the last purchase, the repeat purchases, the purchase rate over T, how far into T the last
    purchase came, the mean gap between purchases and the current gap against it. Null before a first
    purchase; they need no subscriptions, logins or signup dates."""
    return [
        Feature("days_since_first_purchase", "float64", "purchase_cycle", "Days since the first purchase (T)", "days",
                None, 0, "First purchase {value:.0f} day{s} ago", "首次购买在{value:.0f}天前", description_zh="距首次购买的天数",
                build=_days_since_first_purchase),
        Feature("purchase_span_days", "float64", "purchase_cycle", "Days from the first to the last purchase",
                "days", None, 0, "Bought over a span of {value:.0f} day{s}", "购买跨度{value:.0f}天",
                description_zh="首次到最近一次购买的天数", build=_purchase_span_days),
        Feature("repeat_purchase_days", "float64", "purchase_cycle", "Days with a purchase after the first one",
                "purchase days", None, -1, "Came back to buy on {value:.0f} day{s}", "复购了{value:.0f}天",
                description_zh="复购天数", build=_repeat_purchase_days),
        Feature("purchase_days_per_30d", "float64", "purchase_cycle",
                "Purchase days per 30 days since the first purchase", "per 30 days", None, -1,
                "Buys on {value:.1f} days a month", "每月购买{value:.1f}天", description_zh="每30天的购买天数",
                build=_purchase_days_per_30d),
        Feature("purchase_recency_share", "float64", "purchase_cycle",
                "How far into the time since the first purchase the last one came (1 = just bought)", "share",
                None, -1, "Last purchase at {value:.0%} of the customer's buying life",
                "最近一次购买位于其购买周期的{value:.0%}", description_zh="最近购买在购买周期中的位置",
                build=_purchase_recency_share),
        Feature("purchase_gap_mean_days", "float64", "purchase_cycle", "Mean days between purchase days", "days",
                None, 0, "Usually buys every {value:.1f} days", "通常每{value:.1f}天购买一次",
                description_zh="平均购买间隔天数", build=_purchase_gap_mean_days),
        Feature("purchase_overdue_ratio", "float64", "purchase_cycle",
                "Days since the last purchase divided by the usual gap between purchases", "ratio", None, 1,
                "Next purchase overdue: {value:.1f}× the usual gap", "距上次购买已是平时间隔的{value:.1f}倍",
                description_zh="距上次购买与平时购买间隔之比", build=_purchase_overdue_ratio),
    ]  # fmt: skip


RFM_SEGMENTS: tuple[str, ...] = (
    "Champions", "Loyal", "Potential Loyalists", "New Customers", "Promising", "Need Attention",
    "About to Sleep", "At Risk", "Can't Lose", "Hibernating", "No Purchase Yet",
)  # fmt: skip
# How the RFM segments read in a Chinese reason.
RFM_SEGMENTS_ZH: dict[str, str] = {
    "Champions": "冠军客户", "Loyal": "忠诚客户", "Potential Loyalists": "潜在忠诚客户", "New Customers": "新客户",
    "Promising": "有潜力客户", "Need Attention": "需要关注", "About to Sleep": "即将沉睡", "At Risk": "有流失风险",
    "Can't Lose": "不能失去", "Hibernating": "休眠客户", "No Purchase Yet": "尚未购买",
}  # fmt: skip


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
    """Each feature's metadata as a plain dict (its builder left out)."""
    for feature in registry:
        record = {f.name: getattr(feature, f.name) for f in fields(feature) if f.name != "build"}
        record["categories"] = list(feature.categories)
        yield record


# ---------------------------------------------------------------------------------------------------
# the column builders: each reads the context table described in the module docstring


def _window_total(t: Any, metric: str, window: int | None) -> Any:
    """The metric's total over [cutoff − window, cutoff), or over everything before the cutoff."""
    total = t[f"{metric}_at_0"]
    return total if window is None else total - t[f"{metric}_at_{window}"]


def _window_count(metric: str, window: int | None, t: Any, p: FeatureParams) -> Any:
    return _window_total(t, metric, window).cast("float64")


def _days_since(column: str, t: Any, p: FeatureParams) -> Any:
    return (t.cutoff_day - t[column]).cast("float64")


def _revenue_mean(window: int | None, t: Any, p: FeatureParams) -> Any:
    import ibis

    revenue = _window_total(t, "revenue", window).cast("float64")
    purchases = _window_total(t, "n_purchases", window)
    return ibis.ifelse(purchases > 0, revenue / purchases, None).cast("float64")


def _trend_halves(metric: str, t: Any, p: FeatureParams) -> tuple[Any, Any]:
    """The metric over the last trend window, and over the one before it."""
    trend = p.trend_window_days
    recent = (t[f"{metric}_at_0"] - t[f"{metric}_at_{trend}"]).cast("float64")
    before = (t[f"{metric}_at_{trend}"] - t[f"{metric}_at_{2 * trend}"]).cast("float64")
    return recent, before


def _change_pct(metric: str, t: Any, p: FeatureParams) -> Any:
    import ibis

    recent, before = _trend_halves(metric, t, p)
    return (100.0 * (recent - before) / ibis.greatest(before, 1.0)).cast("float64")


def _change_diff(metric: str, t: Any, p: FeatureParams) -> Any:
    recent, before = _trend_halves(metric, t, p)
    return recent - before


def _gap_mean(t: Any, p: FeatureParams) -> Any:
    import ibis

    gaps = t["has_gap_at_0"].cast("float64")
    return ibis.ifelse(gaps > 0, t["gap_at_0"] / gaps, None).cast("float64")


def _gap_std(t: Any, p: FeatureParams) -> Any:
    import ibis

    gaps = t["has_gap_at_0"].cast("float64")
    mean_gap = _gap_mean(t, p)
    variance = t["gap_sq_at_0"] / gaps - mean_gap * mean_gap
    return ibis.ifelse(gaps > 0, ibis.greatest(variance, 0.0).sqrt(), None).cast("float64")


def _gap_ratio(t: Any, p: FeatureParams) -> Any:
    return (_days_since("last_event_day", t, p) / _gap_mean(t, p)).cast("float64")


def _plan_changes(window: int | None, t: Any, p: FeatureParams) -> Any:
    import ibis

    changes = (_window_total(t, f"n_{e}", window) for e in p.plan_change_event_types)
    return sum(changes, ibis.literal(0)).cast("float64")


def _current_plan(t: Any, p: FeatureParams) -> Any:
    """The active subscription's plan (the no-subscription plan when none); without subscriptions, the
    plan the users table gives."""
    import ibis

    return ibis.ifelse(t.subscriptions_known, t.active_plan.fill_null(p.no_subscription_plan), t.signup_plan)


def plan_rank(plan: Any, p: FeatureParams) -> Any:
    """A plan's position in `plan_order` (null for a plan not in it)."""
    import ibis

    branches = [(plan == name, float(i)) for i, name in enumerate(p.plan_order)]
    return ibis.cases(*branches, else_=ibis.null("float64")).cast("float64")


def _plan_rank(t: Any, p: FeatureParams) -> Any:
    return plan_rank(_current_plan(t, p), p)


def _subscription_value(t: Any, value: Any, when_none: float) -> Any:
    """`value` (or `when_none` when no subscription is active) — null without a subscriptions input."""
    import ibis

    return ibis.ifelse(t.subscriptions_known, value.fill_null(when_none), ibis.null("float64")).cast(
        "float64"
    )


def _mrr(t: Any, p: FeatureParams) -> Any:
    return _subscription_value(t, t.active_mrr, 0.0)


def _last_mrr(t: Any, p: FeatureParams) -> Any:
    return _subscription_value(t, t.last_mrr, 0.0)


def _subscription_periods(t: Any, p: FeatureParams) -> Any:
    return _subscription_value(t, t.periods_started, 0.0)


def _bill_period_days(t: Any, p: FeatureParams) -> Any:
    import ibis

    billed = t.subscriptions_known & t.has_active.fill_null(False)
    return ibis.ifelse(billed, float(p.bill_period_days), None).cast("float64")


def _days_to_renewal(t: Any, p: FeatureParams) -> Any:
    bill = float(p.bill_period_days)
    return (bill - t.active_elapsed % bill).cast("float64")


def _last_action(t: Any, p: FeatureParams) -> Any:
    return t.contact_last_action


def rfm_measures(t: Any, p: FeatureParams) -> tuple[Any, dict[str, Any]]:
    """Whether the user has bought, and the recency, frequency and monetary measures the quintiles
    (`_q<key><i>` in the context) are taken over, among buyers at each cutoff."""
    registry = {f.name: f for f in build_registry(p)}
    has_count = "purchase_count_total" in registry

    def value(name: str) -> Any:
        build = registry[name].build
        assert build is not None
        return build(t, p)

    buyer = (value("purchase_count_total") if has_count else value("revenue_sum_total")) > 0
    frequency = value("purchase_count_total") if has_count else value("events_count_total")
    return buyer, {"r": value("days_since_last_purchase"), "f": frequency, "m": value("revenue_sum_total")}


def _thresholds_passed(t: Any, value: Any, key: str, p: FeatureParams) -> Any:
    """How many quintile thresholds the value exceeds (ties share a score)."""
    import ibis

    passed = (ibis.ifelse(value > t[f"_q{key}{i}"], 1, 0) for i in range(p.rfm_buckets - 1))
    return sum(passed, ibis.literal(0))


def _rfm_score(key: str, t: Any, p: FeatureParams) -> Any:
    """1–5 among buyers (recency reversed: 5 = most recent), 0 for those who have not bought."""
    import ibis

    buyer, measures = rfm_measures(t, p)
    passed = _thresholds_passed(t, measures[key], key, p)
    score = p.rfm_buckets - passed if key == "r" else 1 + passed
    return ibis.ifelse(buyer, score, 0).cast("float64")


def _rfm_recency_score(t: Any, p: FeatureParams) -> Any:
    return _rfm_score("r", t, p)


def _rfm_frequency_score(t: Any, p: FeatureParams) -> Any:
    return _rfm_score("f", t, p)


def _rfm_monetary_score(t: Any, p: FeatureParams) -> Any:
    return _rfm_score("m", t, p)


def _rfm_segment(t: Any, p: FeatureParams) -> Any:
    import ibis

    r, f = _rfm_score("r", t, p), _rfm_score("f", t, p)
    branches = [((r == 0) | (f == 0), "No Purchase Yet")]
    for segment, (r_range, f_range) in RFM_GRID.items():
        branches.append(
            (r.between(min(r_range), max(r_range)) & f.between(min(f_range), max(f_range)), segment)
        )
    return ibis.cases(*branches)


def _purchase_cycle(t: Any) -> dict[str, Any]:
    """T, the first-to-last span and the repeat purchase days (float64; null before a first purchase)."""
    import ibis

    bought = t.purchase_days_at_0 > 0
    since_first = (t.cutoff_day + t.first_purchase_neg_day).cast("float64")
    span = (t.last_purchase_day + t.first_purchase_neg_day).cast("float64")
    repeats = ibis.ifelse(bought, t.purchase_days_at_0 - 1, None).cast("float64")
    return {"bought": bought, "T": since_first, "span": span, "repeats": repeats}


def _days_since_first_purchase(t: Any, p: FeatureParams) -> Any:
    return _purchase_cycle(t)["T"]


def _purchase_span_days(t: Any, p: FeatureParams) -> Any:
    return _purchase_cycle(t)["span"]


def _repeat_purchase_days(t: Any, p: FeatureParams) -> Any:
    return _purchase_cycle(t)["repeats"]


def _purchase_days_per_30d(t: Any, p: FeatureParams) -> Any:
    import ibis

    c = _purchase_cycle(t)
    days = t.purchase_days_at_0.cast("float64")
    return ibis.ifelse(c["bought"], 30.0 * days / ibis.greatest(c["T"], 1.0), None).cast("float64")


def _purchase_recency_share(t: Any, p: FeatureParams) -> Any:
    import ibis

    c = _purchase_cycle(t)
    return ibis.ifelse(c["T"] > 0, c["span"] / c["T"], None).cast("float64")


def _purchase_gap_mean_days(t: Any, p: FeatureParams) -> Any:
    import ibis

    c = _purchase_cycle(t)
    return ibis.ifelse(c["repeats"] > 0, c["span"] / c["repeats"], None).cast("float64")


def _purchase_overdue_ratio(t: Any, p: FeatureParams) -> Any:
    import ibis

    gap = _purchase_gap_mean_days(t, p)
    since_last = _days_since("last_purchase_day", t, p)
    return ibis.ifelse(gap > 0, since_last / gap, None).cast("float64")
