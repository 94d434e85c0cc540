"""The reviewer pages: server-rendered HTML over the same models, store and decision log as the API.

- `/review`: the snapshot's overview (stage mix and flows, action mix and value, calibration and lift,
  the highest-risk and highest-value users, versions);
- `/review/users/{user_id}`: one user's decision as a reviewer needs it (stage and timeline, scores,
  SHAP waterfalls, reasons, the value breakdown of every action and why the others lost, recent events
  and contacts, the decisions logged for the user);
- `/review/monitor`: drift of the store's snapshot against the champion's training cutoffs (features,
  scores, stage and action mix, expected value by stage) and predicted vs measured lift per action;
- `/review/decisions/{decision_id}`: a logged decision as it was made, re-run under the versions it was
  made with to show that it reproduces.

Scope `review`. A browser sends the key once to /review/login, which answers with a signed session token
(serving/review/session.py: never the key) in an HttpOnly, SameSite=Strict cookie that expires, `Secure`
when the request came over https; /review/logout clears it. Both forms are refused (403) unless posted
from this site's own pages (Origin). Scripts may send `X-API-Key`. Figures are matplotlib SVG rendered
here; pages load nothing from another origin and run no inline script or style (the Content-Security-
Policy says so; their CSS and JS are serving/static). `?lang=zh` renders the Chinese text.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from features.jobs import user_activity
from serving.dependencies import (
    ConfigDep,
    DecisionLogDep,
    HolderDep,
    MonitorDep,
    OverviewDep,
    ReplaysDep,
    ScorerDep,
    SessionsDep,
    SettingsDep,
    StoreDep,
    WaterfallsDep,
)
from serving.review.caches import money_features
from serving.review.pages import PageRefused, error_page, no_store, page
from serving.review.replay import breakdown, compare_replay, in_language, logged_snapshot
from serving.review.session import SESSION_COOKIE, cross_origin
from serving.review.text import TEXT, Lang, term
from serving.state import ModelHolder, ModelSet

log = logging.getLogger(__name__)


def signed_in(request: Request, settings: SettingsDep, sessions: SessionsDep, lang: Lang = "en") -> None:
    """A dependency: the request carries a key (`X-API-Key`) or a live session (the cookie) with the `review`
    scope, or the reader gets the page saying why not."""
    key = request.headers.get("x-api-key")
    token = request.cookies.get(SESSION_COOKIE)
    if not key and not token:
        raise PageRefused(error_page(request, lang, 401, TEXT[lang]["login"], TEXT[lang]["login_needed"]))
    if key:
        scopes, problem = settings.scopes_of(key), TEXT[lang]["unknown_key"]
    else:
        checked = sessions.check(token or "", settings.api_keys)
        scopes, problem = checked.scopes, checked.problem
    if scopes is None:
        raise PageRefused(error_page(request, lang, 401, TEXT[lang]["login"], term(problem or "", lang)))
    if "review" not in scopes:
        raise PageRefused(error_page(request, lang, 403, "403", TEXT[lang]["forbidden"]))


def serving_models(request: Request, holder: ModelHolder, lang: str) -> ModelSet:
    """The models being served, or the page saying none are loaded."""
    models = holder.current
    if models is None:
        detail = f"{TEXT[lang]['no_models']}: {holder.status.last_error}"
        raise PageRefused(error_page(request, lang, 503, "503", detail))
    return models


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.replace({np.nan: None}).to_dict("records")


def _local(target: str) -> str:
    """A redirect target on this site only (no scheme, no host)."""
    return target if target.startswith("/review") and "//" not in target else "/review"


router = APIRouter(prefix="/review", include_in_schema=False)
SIGNED = [Depends(signed_in)]


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, lang: Lang = "en", next: str = "/review") -> HTMLResponse:
    return page(request, "login.html.j2", lang, next=_local(next))


@router.post("/login")
def login(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    api_key: str = Form(...),
    next: str = Form("/review"),
    lang: str = Form("en"),
):
    """Check the key and answer with a session cookie. Only a form posted from this site's pages is taken
    (login CSRF: another site could otherwise sign a reviewer in under its own key)."""
    lang = lang if lang in TEXT else "en"
    refused = cross_origin(request)
    if refused:
        return error_page(request, lang, 403, "403", refused)
    scopes = settings.scopes_of(api_key)
    if scopes is None or "review" not in scopes:
        status = 401 if scopes is None else 403
        detail = TEXT[lang]["unknown_key"] if scopes is None else TEXT[lang]["forbidden"]
        return page(request, "login.html.j2", lang, status, next=_local(next), error=detail)
    response = RedirectResponse(_local(next), status_code=303)
    # SameSite=Strict: every review page is a read, so a cross-site link costs at most a second sign-in
    response.set_cookie(
        SESSION_COOKIE, sessions.issue(api_key), max_age=sessions.lifetime_seconds, path="/review",
        secure=request.url.scheme == "https", httponly=True, samesite="strict",
    )  # fmt: skip
    return no_store(response)


@router.post("/logout")
def logout(request: Request, lang: str = Form("en")):
    """Clear the session cookie (from this site's pages only, like the sign-in)."""
    lang = lang if lang in TEXT else "en"
    refused = cross_origin(request)
    if refused:
        return error_page(request, lang, 403, "403", refused)
    response = RedirectResponse(f"/review/login?lang={lang}", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/review", secure=request.url.scheme == "https",
                           httponly=True, samesite="strict")  # fmt: skip
    return no_store(response)


@router.get("", response_class=HTMLResponse, dependencies=SIGNED)
def overview_page(
    request: Request,
    holder: HolderDep,
    store: StoreDep,
    decision_log: DecisionLogDep,
    cache: OverviewDep,
    scorer: ScorerDep,
    lang: Lang = "en",
) -> HTMLResponse:
    models = serving_models(request, holder, lang)
    data = cache.get(models, store)
    snapshot = data.snapshot
    contacted = snapshot[snapshot["action"] != "no_action"]
    return page(
        request, "overview.html.j2", lang, data=data, versions=models.version_labels(),
        currency=models.policy.value.currency,
        info=store.info(), mix=_records(data.mix), top=_records(data.top),
        reach=None if data.reach is None else _records(data.reach),
        counts=data.counts, flow=data.flow, contacts=len(contacted),
        total_value=float(snapshot["expected_value"].sum()), total_cost=float(contacted["cost"].sum()),
        decisions=decision_log.stats(), snapshot=scorer.snapshot(data.as_of, lang),
    )  # fmt: skip


@router.get("/lift", response_class=HTMLResponse, dependencies=SIGNED)
def lift_page(
    request: Request, config: ConfigDep, decision_log: DecisionLogDep, lang: Lang = "en"
) -> HTMLResponse:
    """Measured lift from the decision log and its outcomes (serving.lift): the policy against the global
    control group, each action against its holdouts, per stage."""
    from serving.lift import logged_lift, logged_rows

    decision_log.flush(timeout=2.0)
    rows = logged_rows(decision_log, config.lift)
    table = logged_lift(decision_log, config.lift)
    return page(
        request, "lift.html.j2", lang, rows=_records(table), users=len(rows), section=config.lift,
        currency=config.value.currency,
        control=int(rows["control_group"].sum()) if len(rows) else 0,
    )  # fmt: skip


@router.get("/monitor", response_class=HTMLResponse, dependencies=SIGNED)
def monitor_page(
    request: Request, holder: HolderDep, store: StoreDep, decision_log: DecisionLogDep, monitor: MonitorDep,
    lang: Lang = "en",
) -> HTMLResponse:  # fmt: skip
    """Drift of the snapshot against the training cutoffs, and predicted vs measured lift from the log."""
    models = serving_models(request, holder, lang)
    return page(request, "monitor.html.j2", lang, view=monitor.get(models, store, decision_log),
                currency=models.policy.value.currency)  # fmt: skip


@router.get("/search")
def search(request: Request, user_id: str = Query("", max_length=200), lang: Lang = "en"):
    return no_store(RedirectResponse(f"/review/users/{user_id.strip()}?lang={lang}", status_code=303))


@router.get("/users/{user_id}", response_class=HTMLResponse, dependencies=SIGNED)
def user_page(
    request: Request,
    user_id: str,
    config: ConfigDep,
    settings: SettingsDep,
    scorer: ScorerDep,
    holder: HolderDep,
    store: StoreDep,
    decision_log: DecisionLogDep,
    cache: OverviewDep,
    waterfalls: WaterfallsDep,
    lang: Lang = "en",
) -> HTMLResponse:
    models = serving_models(request, holder, lang)
    row = store.read(user_id)
    if row is None:
        info = store.info()
        text = TEXT[lang]
        detail = (text["no_user"].format(user_id=user_id, as_of=info.as_of) if info
                  else text["no_user_no_snapshot"].format(user_id=user_id))  # fmt: skip
        return error_page(request, lang, 404, text["not_found"], detail)
    values = dict(row.values)
    # as the API decides (exploration and the control group included), so the page shows what it would send
    decided = scorer.decide(models, values, user_id=user_id, as_of=row.as_of, lang=lang,
                            explore=settings.exploration)  # fmt: skip
    decision = decided.decision
    events = contacts = None
    if settings.events_dir:
        events, contacts = user_activity(
            Path(settings.events_dir), user_id, before=row.as_of, limit=config.review.recent_events
        )
    timeline = cache.get(models, store).timelines.get(user_id, [])
    return page(
        request, "user.html.j2", lang, d=decision, decided=decided,
        rows=breakdown(decided.candidates), currency=decision.value.currency,
        money_features=money_features(models), rule_parts=models.policy.stage_rules.parts_of(decision.stage.rule, lang),
        waterfall_churn=waterfalls.svg(models, "churn", decided.inputs, lang),
        waterfall_upgrade=waterfalls.svg(models, "upgrade", decided.inputs, lang),
        timeline=timeline, events=None if events is None else _records(events),
        contacts=None if contacts is None else _records(contacts),
        logged=[{**r, "snapshot": logged_snapshot(r, scorer.stale_after_days, lang)}
                for r in decision_log.decisions_for_user(user_id, limit=10)],
    )  # fmt: skip


@router.get("/decisions/{decision_id}", response_class=HTMLResponse, dependencies=SIGNED)
def decision_page(
    request: Request,
    decision_id: str,
    scorer: ScorerDep,
    holder: HolderDep,
    decision_log: DecisionLogDep,
    replays: ReplaysDep,
    waterfalls: WaterfallsDep,
    lang: Lang = "en",
) -> HTMLResponse:
    logged = decision_log.get_decision(decision_id)
    if logged is None:
        decision_log.flush(timeout=2.0)  # a decision made a moment ago may be queued
        logged = decision_log.get_decision(decision_id)
    if logged is None:
        detail = TEXT[lang]["no_decision"].format(decision_id=decision_id)
        return error_page(request, lang, 404, TEXT[lang]["not_found"], detail)
    payload = logged["payload"]
    as_of = dt.date.fromisoformat(payload["as_of"]) if payload.get("as_of") else None
    again = differences = drawn = error = models = None
    try:
        models = replays.get(logged["versions"], holder.current)
        # the exploration draw is a hash, so a decision served with exploration on re-runs to the same choice
        again = scorer.decide(models, logged["inputs"], user_id=logged["user_id"], as_of=as_of, lang=lang,
                              explore=float(logged["propensity"]) < 1.0, request_key=logged.get("request_digest"))  # fmt: skip
        differences = compare_replay(logged, again, models.policy.stage_rules)
        drawn = {
            target: waterfalls.svg(models, target, logged["inputs"], lang) for target in ("churn", "upgrade")
        }
    except Exception as exc:  # an archived version, a deleted run: show the record, say why no re-run
        log.warning("replay of %s failed: %s", decision_id, exc)
        error = f"{type(exc).__name__}: {exc}"
    upgrade_value = payload["upgrade"].get("value")
    # the reasons and the stage rule in the reader's language: regenerated by the re-run (the logged ones are
    # in the language the decision was made in), as logged when it could not re-run
    shown = again.decision.model_dump(mode="json") if again is not None else payload
    known = models or holder.current
    return page(
        request, "decision.html.j2", lang, logged=logged, p=payload, differences=differences,
        waterfalls=drawn, error=error, inputs=sorted(logged["inputs"].items()),
        rows=breakdown(in_language(logged["candidates"], again), payload["clv"], upgrade_value),
        snapshot=logged_snapshot(logged, scorer.stale_after_days, lang),
        explanations=shown["explanations"], rule=shown["stage"]["rule"],
        rule_parts=None if known is None else known.policy.stage_rules.parts_of(shown["stage"]["rule"], lang),
        currency=payload.get("value", {}).get("currency") or (known.policy.value.currency if known else None),
        money_features=() if known is None else money_features(known),
    )  # fmt: skip
