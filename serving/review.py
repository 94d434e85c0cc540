"""The reviewer pages: server-rendered HTML over the same models, store and decision log as the API.

- `/review`: the snapshot's overview (stage mix and flows, action mix and value, calibration and lift,
  the highest-risk and highest-value users, versions);
- `/review/users/{user_id}`: one user's decision as a reviewer needs it (stage and timeline, scores,
  SHAP waterfalls, reasons, the value breakdown of every action and why the others lost, recent events
  and contacts, the decisions logged for the user);
- `/review/decisions/{decision_id}`: a logged decision as it was made, re-run under the versions it was
  made with to show that it reproduces.

Scope `review`. A browser sends the key once to /review/login, which keeps it in an HttpOnly cookie;
scripts may send `X-API-Key`. Figures are matplotlib SVG rendered here; pages load nothing from
another origin (Content-Security-Policy says so). `?lang=zh` renders the Chinese text.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from features.build import LabelParams
from features.jobs import feature_history, user_activity
from features.online import OnlineStore
from features.registry import FeatureParams
from models import overview as ov
from models import plots
from models.frame import encode_row
from models.scoring import contributions_matrix
from serving.scorer import Decided, Scorer
from serving.settings import ServingSettings
from serving.state import ModelHolder, ModelSet, RegistryLoader

log = logging.getLogger(__name__)
COOKIE = "clm_review_key"
Lang = Literal["en", "zh"]
CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
WATERFALL_TOP_K = 10
REPLAY_TOLERANCE = 1e-9

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "overview": "Overview",
        "snapshot": "Snapshot",
        "users": "users",
        "user": "User",
        "stage_mix": "Stage mix and flows",
        "action_mix": "Actions and value",
        "calibration": "Churn model: calibration and lift",
        "top_users": "Highest-risk and highest-value users",
        "versions": "Versions",
        "search": "Filter",
        "stage": "Stage",
        "rule": "rule that fired",
        "since": "since",
        "timeline": "Stage timeline",
        "scores": "Scores",
        "churn": "Churn probability",
        "upgrade": "Upgrade probability",
        "band": "band",
        "clv": "Customer value (CLV)",
        "upgrade_value": "Value of an upgrade",
        "why_churn": "Why this churn score",
        "why_upgrade": "Why this upgrade score",
        "reasons": "Plain-language reasons",
        "action": "Chosen action",
        "breakdown": "Expected value of every action",
        "why_lost": "why not chosen",
        "events": "Recent events",
        "contacts": "Recent contacts",
        "logged": "Logged decisions",
        "replay": "Replay of a logged decision",
        "replay_ok": "Re-run under the same versions with the logged inputs: the decision reproduces.",
        "replay_diff": "Re-run under the same versions with the logged inputs: differences found.",
        "replay_unavailable": "Could not re-run this decision",
        "inputs": "Inputs the decision was made from",
        "made_at": "made at",
        "explored": "explored (random choice)",
        "propensity": "propensity",
        "no_events_dir": "Stage flows, calibration and recent events need the event data: set CLM_EVENTS_DIR.",
        "how_stage": "How to read: each bar is one snapshot; the table shows where the users of the previous snapshot went.",
        "how_action": "How to read: users per chosen action and the total expected value (uplift × value − cost).",
        "how_calibration": "How to read: points on the diagonal mean the predicted churn probability is the rate observed.",
        "how_waterfall": "How to read: red bars push the score up, blue bars down, from the model's average to this user.",
        "how_breakdown": "Value = −Δchurn × CLV + Δupgrade × upgrade value − cost; the largest positive value wins, otherwise no action.",
        "not_found": "Not found",
        "back": "Back to the overview",
        "login": "Sign in",
        "api_key": "API key",
        "login_needed": "Sign in with an API key that has the review scope.",
        "forbidden": "This API key lacks the review scope.",
        "feature": "feature",
        "value": "value",
        "contribution": "contribution",
        "reason": "reason",
        "status": "status",
        "cost": "cost",
        "total_value": "total expected value",
        "contacts_planned": "users to contact",
        "cutoff": "cutoff",
        "matured": "labels known for",
        "name": "name",
        "when": "when",
        "event": "event",
        "amount": "amount",
        "chosen": "chosen",
        "logged_payload": "As returned to the caller",
        "recomputed": "recomputed",
        "computing": "The overview is being computed; this page refreshes itself.",
        "language": "中文",
    },
    "zh": {
        "overview": "总览",
        "snapshot": "快照",
        "users": "用户",
        "user": "用户",
        "stage_mix": "生命周期阶段分布与流转",
        "action_mix": "干预动作与价值",
        "calibration": "流失模型：校准与提升",
        "top_users": "高风险与高价值用户",
        "versions": "版本",
        "search": "筛选",
        "stage": "阶段",
        "rule": "命中的规则",
        "since": "起始",
        "timeline": "阶段时间线",
        "scores": "评分",
        "churn": "流失概率",
        "upgrade": "升级概率",
        "band": "等级",
        "clv": "客户终身价值 (CLV)",
        "upgrade_value": "升级价值",
        "why_churn": "流失评分的原因",
        "why_upgrade": "升级评分的原因",
        "reasons": "通俗解释",
        "action": "选定动作",
        "breakdown": "每个动作的期望价值",
        "why_lost": "未被选中的原因",
        "events": "最近事件",
        "contacts": "最近触达",
        "logged": "已记录的决策",
        "replay": "决策回放",
        "replay_ok": "用相同版本和记录的输入重新计算：决策一致。",
        "replay_diff": "用相同版本和记录的输入重新计算：发现差异。",
        "replay_unavailable": "无法重新计算该决策",
        "inputs": "决策所用的输入",
        "made_at": "决策时间",
        "explored": "探索（随机选择）",
        "propensity": "选择概率",
        "no_events_dir": "阶段流转、校准和最近事件需要事件数据：请设置 CLM_EVENTS_DIR。",
        "how_stage": "阅读方法：每根柱子是一个快照；表格显示上一个快照的用户去了哪个阶段。",
        "how_action": "阅读方法：每个动作的用户数及总期望价值（提升 × 价值 − 成本）。",
        "how_calibration": "阅读方法：点落在对角线上表示预测的流失概率等于观察到的比例。",
        "how_waterfall": "阅读方法：红色推高评分，蓝色拉低评分，从模型平均值到该用户。",
        "how_breakdown": "价值 = −Δ流失 × CLV + Δ升级 × 升级价值 − 成本；取最大正值，否则不干预。",
        "not_found": "未找到",
        "back": "返回总览",
        "login": "登录",
        "api_key": "API 密钥",
        "login_needed": "请使用具有 review 权限的 API 密钥登录。",
        "forbidden": "该 API 密钥没有 review 权限。",
        "feature": "特征",
        "value": "值",
        "contribution": "贡献",
        "reason": "原因",
        "status": "状态",
        "cost": "成本",
        "total_value": "总期望价值",
        "contacts_planned": "待触达用户",
        "cutoff": "截止日期",
        "matured": "已知标签的截止日期",
        "name": "名称",
        "when": "时间",
        "event": "事件",
        "amount": "金额",
        "chosen": "选中",
        "logged_payload": "返回给调用方的内容",
        "recomputed": "重新计算",
        "computing": "总览正在计算中；页面会自动刷新。",
        "language": "English",
    },
}


@dataclass
class Overview:
    """Everything /review shows, computed once per (model versions, store snapshot)."""

    as_of: dt.date
    snapshot: pd.DataFrame  # one decision per user at the snapshot
    history: pd.DataFrame  # user_id, cutoff, stage, p_churn, action … at every cutoff
    cutoffs: list[dt.date]
    counts: pd.DataFrame
    flow: pd.DataFrame | None  # from-stage × to-stage users for the last step
    mix: pd.DataFrame
    top: pd.DataFrame
    figures: dict[str, str]
    calibration: dict[str, Any] | None  # cutoff, users, ece
    has_history: bool
    seconds: float
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _history_cutoffs(as_of: dt.date, earlier: int, step_days: int) -> list[dt.date]:
    return [as_of - dt.timedelta(days=step_days * k) for k in range(earlier, -1, -1)]


def _store_frame(store: OnlineStore) -> pd.DataFrame:
    rows = store.read_many(store.user_ids())
    frame = pd.DataFrame([row.values for row in rows.values()])
    frame.insert(0, "user_id", list(rows))
    return frame


class BuildCancelled(Exception):
    """The app is shutting down: an overview build in progress stops at its next step."""


def _stop_if(cancelled: Callable[[], bool]) -> None:
    if cancelled():
        raise BuildCancelled


def overview_inputs(
    store: OnlineStore, config: dict[str, Any], events_dir: str | None
) -> tuple[dt.date, pd.DataFrame]:
    """The I/O of an overview: the snapshot's date and the features of every user at the snapshot (and, with
    the event data, at the earlier cutoffs, with the labels where their horizon has closed)."""
    info = store.info()
    if info is None:
        raise HTTPException(503, "the online store has no snapshot yet")
    review = config["review"]
    as_of = info.as_of
    if events_dir:
        cutoffs = _history_cutoffs(as_of, int(review["history_cutoffs"]), int(review["history_step_days"]))
        frame = feature_history(
            Path(events_dir), cutoffs, params=FeatureParams.from_config(config["features"]),
            label_params=LabelParams.from_config(config["labels"]),
        )  # fmt: skip
    else:
        frame = _store_frame(store).assign(cutoff=as_of)
    return as_of, frame


def timelines_by_user(history: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Each user's (cutoff, stage, churn probability, action) rows, oldest first: one sort and one pass
    (a groupby with a frame per user cost ~3 ms a user, 10 s for 3,000)."""
    ordered = history[["user_id", "cutoff", "stage", "p_churn", "action"]].sort_values(
        ["user_id", "cutoff"], kind="stable"
    )
    timelines: dict[str, list[dict[str, Any]]] = {}
    for record in ordered.to_dict("records"):
        timelines.setdefault(str(record["user_id"]), []).append(record)
    return timelines


def summarise_overview(
    models: ModelSet,
    frame: pd.DataFrame,
    as_of: dt.date,
    config: dict[str, Any],
    has_history: bool,
    cancelled: Callable[[], bool] = lambda: False,
) -> Overview:
    """The decisions over `frame` summarised and drawn (no I/O); stops between steps once `cancelled()`."""
    started = time.perf_counter()
    history = ov.population_decisions(frame, models.churn, models.upgrade, models.policy)
    present = sorted(history["cutoff"].unique())
    snapshot = history[history["cutoff"] == as_of].reset_index(drop=True)
    counts = ov.stage_counts(history)
    flows = ov.stage_flows(history)
    flow = ov.flow_matrix(flows, present[-2], present[-1]) if len(present) > 1 else None
    mix = ov.action_mix(snapshot)
    _stop_if(cancelled)
    figures = {"stages": plots.figure_svg(plots.stage_share_figure(counts), "stages")}
    _stop_if(cancelled)
    figures["actions"] = plots.figure_svg(plots.action_mix_figure(mix), "actions")
    _stop_if(cancelled)
    figures["scores"] = plots.figure_svg(
        plots.score_distribution_figure({"churn": snapshot["p_churn"], "upgrade": snapshot["p_upgrade"]}),
        "scores",
    )
    calibration = None
    if "churn" in frame:
        known = frame["churn"].notna().to_numpy()
        labelled = sorted(history.loc[known, "cutoff"].unique())
        if labelled:
            _stop_if(cancelled)
            cutoff = labelled[-1]
            rows = known & (history["cutoff"] == cutoff).to_numpy()
            y = frame.loc[rows, "churn"].astype(float).to_numpy()
            p = history.loc[rows, "p_churn"].to_numpy()
            from models.metrics import expected_calibration_error

            title = f"Calibration on the {cutoff} cutoff ({int(rows.sum()):,} users, labels known)"
            figures["calibration"] = plots.figure_svg(
                plots.calibration_figure(y, None, p, title=title), "calibration"
            )
            figures["lift"] = plots.figure_svg(plots.lift_figure(y, {"churn model": p}), "lift")
            calibration = {
                "cutoff": cutoff,
                "users": int(rows.sum()),
                "ece": expected_calibration_error(y, p),
            }
    _stop_if(cancelled)
    return Overview(
        as_of=as_of, snapshot=snapshot, history=history, cutoffs=present, counts=counts, flow=flow, mix=mix,
        top=ov.top_users(snapshot, n=int(config["review"]["top_users"])), figures=figures,
        calibration=calibration, has_history=has_history, seconds=time.perf_counter() - started,
        timelines=timelines_by_user(history),
    )  # fmt: skip


def build_overview(
    models: ModelSet, store: OnlineStore, config: dict[str, Any], events_dir: str | None
) -> Overview:
    """The snapshot's decisions (and, with the event data, the earlier cutoffs' and the labels where their
    horizon has closed), summarised and drawn."""
    started = time.perf_counter()
    as_of, frame = overview_inputs(store, config, events_dir)
    overview = summarise_overview(models, frame, as_of, config, bool(events_dir))
    overview.seconds = time.perf_counter() - started
    return overview


class OverviewCache:
    """The overview of the models serving now over the store's current snapshot; rebuilt when either
    changes. One build at a time; readers wait for it.

    `close` (at shutdown) waits only while a build reads the store, never for the summarising: a build
    in progress stops at its next step, so the app stops at once instead of after a whole build."""

    def __init__(self, config: dict[str, Any], events_dir: str | None) -> None:
        self.config = config
        self.events_dir = events_dir
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # held while a build reads the store (or the event data)
        self._closing = threading.Event()
        self._key: tuple | None = None
        self._value: Overview | None = None

    def get(self, models: ModelSet, store: OnlineStore) -> Overview:
        info = store.info()
        key = (tuple(sorted(models.versions.items())), None if info is None else info.snapshot_id)
        with self._lock:
            if self._key != key or self._value is None:
                started = time.perf_counter()
                with self._reading:
                    _stop_if(self._closing.is_set)
                    as_of, frame = overview_inputs(store, self.config, self.events_dir)
                value = summarise_overview(
                    models, frame, as_of, self.config, bool(self.events_dir), self._closing.is_set
                )
                value.seconds = time.perf_counter() - started
                self._value, self._key = value, key
                log.info("review overview built in %.1f s (%s)", self._value.seconds, key)
            return self._value

    def warm(self, models: ModelSet | None, store: OnlineStore) -> threading.Thread | None:
        """Build the overview in the background (best effort; /review retries on failure)."""
        if models is None:
            return None

        def build() -> None:
            try:
                self.get(models, store)
            except BuildCancelled:
                log.info("the review overview build stopped: the app is shutting down")
            except Exception:
                log.exception("building the review overview failed; /review will retry")

        thread = threading.Thread(target=build, name="review-overview", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop any build in progress; returns once no build reads the store (so the store may close)."""
        self._closing.set()
        with self._reading:
            pass


class ReplayModels:
    """Model sets by exact versions, for replays (a few kept; the serving set is reused when it matches)."""

    def __init__(self, loader: RegistryLoader, size: int = 3) -> None:
        self.loader = loader
        self.size = size
        self._sets: OrderedDict[tuple, ModelSet] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, labels: dict[str, str], serving: ModelSet | None) -> ModelSet:
        versions = {}
        for role in ("churn_model", "upgrade_model", "policy"):
            name, _, version = str(labels[role]).rpartition("/")
            versions[name] = version
        if serving is not None and serving.versions == versions:
            return serving
        key = tuple(sorted(versions.items()))
        with self._lock:
            if key not in self._sets:
                self._sets[key] = self.loader.load_versions(versions, alias="replay")
                while len(self._sets) > self.size:
                    self._sets.popitem(last=False)
            self._sets.move_to_end(key)
            return self._sets[key]


class WaterfallCache:
    """The SHAP waterfalls already drawn, by (model version, target, encoded row): drawing one costs about
    0.3 s of matplotlib layout, and a reviewer comes back to the same user, or opens the replay of a
    decision whose inputs are the user's current row. Least recently used first out."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._svgs: OrderedDict[tuple[str, str, bytes], str] = OrderedDict()
        self._lock = threading.Lock()

    def svg(self, models: ModelSet, target: str, values: dict[str, Any]) -> str:
        """The SHAP waterfall of one model for one feature vector (all features; the top 10 drawn)."""
        bundle = getattr(models, target)
        matrix = encode_row(values, bundle.feature_names, bundle.categories)
        labels = [f"{name} = {_fmt_value(values.get(name))}" for name in bundle.feature_names]
        key = (
            f"{bundle.name}/{models.versions[bundle.name]}",
            target,
            matrix.tobytes() + "|".join(labels).encode(),
        )
        with self._lock:
            if key in self._svgs:
                self._svgs.move_to_end(key)
                return self._svgs[key]
        contrib = contributions_matrix(matrix, bundle)[0]
        title = f"{bundle.name}: SHAP waterfall (log-odds)"
        figure = plots.waterfall_figure(contrib[-1], contrib[:-1], labels, top_k=WATERFALL_TOP_K, title=title)
        markup = plots.figure_svg(figure, f"waterfall-{target}")
        with self._lock:
            self._svgs[key] = markup
            while len(self._svgs) > self.size:
                self._svgs.popitem(last=False)
        return markup


def _fmt_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "missing"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def breakdown(
    candidates: list[dict[str, Any]], clv: float, upgrade_value: float | None
) -> list[dict[str, Any]]:
    """Every candidate's value as its parts: −Δchurn × CLV, Δupgrade × upgrade value, −cost."""
    rows = []
    for c in candidates:
        retention = -float(c.get("delta_churn", 0.0)) * clv
        growth = float(c.get("delta_upgrade", 0.0)) * (upgrade_value or 0.0)
        rows.append({**c, "retention_value": retention, "upgrade_gain": growth})
    return sorted(rows, key=lambda r: (r["status"] != "chosen", -r["expected_value"]))


def compare_replay(logged: dict[str, Any], again: Decided) -> list[str]:
    """What differs between a logged decision and its re-run (empty when it reproduces)."""
    payload = logged["payload"]
    new = again.decision
    differences = []
    checks = [
        ("stage", payload["stage"]["name"], new.stage.name),
        ("stage rule", payload["stage"]["rule"], new.stage.rule),
        ("churn probability", payload["churn"]["probability"], new.churn.probability),
        ("upgrade probability", payload["upgrade"]["probability"], new.upgrade.probability),
        ("clv", payload["clv"], new.clv),
    ]
    if not logged["explored"]:
        checks.append(("action", payload["action"]["name"], new.action.name))
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


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.replace({np.nan: None}).to_dict("records")


class PageRefused(Exception):
    """Raised by a page's dependencies: the page to show instead (sign in, forbidden, no models)."""

    def __init__(self, response: HTMLResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def refused_page(request: Request, exc: PageRefused) -> HTMLResponse:
    """The app's handler for PageRefused: the page the dependency chose."""
    return exc.response


def review_router(
    config: dict[str, Any],
    settings: ServingSettings,
    scorer: Scorer,
    holder: ModelHolder,
    loader: RegistryLoader,
    cache: OverviewCache,
) -> APIRouter:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
    )  # everything a user or the data supplies is escaped
    templates = Jinja2Templates(env=environment)
    templates.env.filters["num"] = lambda v, digits=2: "–" if v is None else f"{float(v):,.{digits}f}"
    templates.env.filters["pct"] = lambda v, digits=1: "–" if v is None else f"{100 * float(v):.{digits}f}%"
    templates.env.filters["fmt"] = _fmt_value
    router = APIRouter(prefix="/review", include_in_schema=False)
    replays = ReplayModels(loader)
    waterfalls = WaterfallCache()
    recent = int(config["review"]["recent_events"])

    def page(request: Request, name: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
        response = templates.TemplateResponse(
            request,
            name,
            {"t": TEXT[lang], "lang": lang, "path": request.url.path, **context},
            status_code=status,
        )
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def error_page(request: Request, lang: str, status: int, title: str, detail: str) -> HTMLResponse:
        return page(request, "error.html.j2", lang, status, title=title, detail=detail, login=status == 401)

    def signed_in(request: Request, lang: Lang = "en") -> None:
        """A dependency: the request carries a key with the `review` scope, or the reader gets the page saying why not."""
        key = request.headers.get("x-api-key") or request.cookies.get(COOKIE)
        if not key:
            raise PageRefused(error_page(request, lang, 401, TEXT[lang]["login"], TEXT[lang]["login_needed"]))
        scopes = settings.scopes_of(key)
        if scopes is None:
            raise PageRefused(error_page(request, lang, 401, TEXT[lang]["login"], "unknown API key"))
        if "review" not in scopes:
            raise PageRefused(error_page(request, lang, 403, "403", TEXT[lang]["forbidden"]))

    def serving_models(request: Request, lang: str) -> ModelSet:
        """The models being served, or the page saying none are loaded."""
        models = holder.current
        if models is None:
            detail = f"no models loaded: {holder.status.last_error}"
            raise PageRefused(error_page(request, lang, 503, "503", detail))
        return models

    signed = [Depends(signed_in)]

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, lang: Lang = "en", next: str = "/review") -> HTMLResponse:
        return page(request, "login.html.j2", lang, next=_local(next))

    @router.post("/login")
    def login(
        request: Request, api_key: str = Form(...), next: str = Form("/review"), lang: str = Form("en")
    ):
        lang = lang if lang in TEXT else "en"
        scopes = settings.scopes_of(api_key)
        if scopes is None or "review" not in scopes:
            status = 401 if scopes is None else 403
            detail = "unknown API key" if scopes is None else TEXT[lang]["forbidden"]
            return page(request, "login.html.j2", lang, status, next=_local(next), error=detail)
        response = RedirectResponse(_local(next), status_code=303)
        response.set_cookie(COOKIE, api_key, httponly=True, samesite="strict", path="/review")
        return response

    @router.get("", response_class=HTMLResponse, dependencies=signed)
    def overview_page(request: Request, lang: Lang = "en") -> HTMLResponse:
        models = serving_models(request, lang)
        data = cache.get(models, request.app.state.store)
        snapshot = data.snapshot
        contacted = snapshot[snapshot["action"] != "no_action"]
        return page(
            request, "overview.html.j2", lang, data=data, versions=models.version_labels(),
            info=request.app.state.store.info(), mix=_records(data.mix), top=_records(data.top),
            counts=data.counts, flow=data.flow, contacts=len(contacted),
            total_value=float(snapshot["expected_value"].sum()), total_cost=float(contacted["cost"].sum()),
            decisions=request.app.state.decision_log.stats(),
        )  # fmt: skip

    @router.get("/search")
    def search(request: Request, user_id: str = Query("", max_length=200), lang: Lang = "en"):
        return RedirectResponse(f"/review/users/{user_id.strip()}?lang={lang}", status_code=303)

    @router.get("/users/{user_id}", response_class=HTMLResponse, dependencies=signed)
    def user_page(request: Request, user_id: str, lang: Lang = "en") -> HTMLResponse:
        models = serving_models(request, lang)
        store = request.app.state.store
        row = store.read(user_id)
        if row is None:
            info = store.info()
            when = f"as of the store's snapshot {info.as_of}" if info else "(the store has no snapshot yet)"
            return error_page(request, lang, 404, TEXT[lang]["not_found"], f"No user {user_id} {when}.")
        values = dict(row.values)
        decided = scorer.decide(models, values, user_id=user_id, as_of=row.as_of, lang=lang)
        decision = decided.decision
        events = contacts = None
        if settings.events_dir:
            events, contacts = user_activity(
                Path(settings.events_dir), user_id, before=row.as_of, limit=recent
            )
        timeline = cache.get(models, store).timelines.get(user_id, [])
        return page(
            request, "user.html.j2", lang, d=decision, decided=decided,
            rows=breakdown(decided.candidates, decision.clv, decision.upgrade.value),
            waterfall_churn=waterfalls.svg(models, "churn", decided.inputs),
            waterfall_upgrade=waterfalls.svg(models, "upgrade", decided.inputs),
            timeline=timeline, events=None if events is None else _records(events),
            contacts=None if contacts is None else _records(contacts),
            logged=request.app.state.decision_log.decisions_for_user(user_id, limit=10),
        )  # fmt: skip

    @router.get("/decisions/{decision_id}", response_class=HTMLResponse, dependencies=signed)
    def decision_page(request: Request, decision_id: str, lang: Lang = "en") -> HTMLResponse:
        logged = request.app.state.decision_log.get_decision(decision_id)
        if logged is None:
            request.app.state.decision_log.flush(timeout=2.0)  # a decision made a moment ago may be queued
            logged = request.app.state.decision_log.get_decision(decision_id)
        if logged is None:
            return error_page(
                request,
                lang,
                404,
                TEXT[lang]["not_found"],
                f"No decision {decision_id} in the decision log.",
            )
        payload = logged["payload"]
        as_of = dt.date.fromisoformat(payload["as_of"]) if payload.get("as_of") else None
        again = differences = drawn = error = None
        try:
            models = replays.get(logged["versions"], holder.current)
            again = scorer.decide(models, logged["inputs"], user_id=logged["user_id"], as_of=as_of, lang=lang)
            differences = compare_replay(logged, again)
            drawn = {
                target: waterfalls.svg(models, target, logged["inputs"]) for target in ("churn", "upgrade")
            }
        except Exception as exc:  # an archived version, a deleted run: show the record, say why no re-run
            log.warning("replay of %s failed: %s", decision_id, exc)
            error = f"{type(exc).__name__}: {exc}"
        upgrade_value = payload["upgrade"].get("value")
        return page(
            request, "decision.html.j2", lang, logged=logged, p=payload, differences=differences,
            waterfalls=drawn, error=error, rows=breakdown(logged["candidates"], payload["clv"], upgrade_value),
            inputs=sorted(logged["inputs"].items()),
        )  # fmt: skip

    return router


def _local(target: str) -> str:
    """A redirect target on this site only (no scheme, no host)."""
    return target if target.startswith("/review") and "//" not in target else "/review"
