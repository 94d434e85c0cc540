"""The decision step behind every decision route: validate the features, read the stored row, decide, score
the shadow models beside it, count it and log it. It lives here, not in the routes, so a route is a few lines
of HTTP and a test can swap the whole step for a stub through `app.dependency_overrides`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from features.online import FeatureRow, OnlineStore
from serving.cache import Contacts, DecisionCache, DecisionCaches, Entry
from serving.decision_log import DecisionLog, DecisionRecord
from serving.schemas import Decision, DecisionRequest
from serving.scorer import Decided, Scorer
from serving.state import ModelHolder, ModelSet


class NoModelsLoaded(RuntimeError):
    """No model set is serving (the lifespan's load or every reload failed); the API answers 503."""


class UnknownUser(LookupError):
    """The user has no row in the store's snapshot; the API answers 404 (a batch item carries it)."""


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "clm_request_seconds", "Request latency by route", ["route", "method", "status"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
        self.decisions = Counter("clm_decisions_total", "Decisions by stage and action", ["stage", "action"],
                                 registry=self.registry)  # fmt: skip
        self.model_version = Gauge("clm_model_version_info", "Loaded model versions (value 1)",
                                   ["role", "model", "version"], registry=self.registry)  # fmt: skip
        self.reload_failures = Counter(
            "clm_reload_failures_total", "Failed model loads", registry=self.registry
        )
        self.log_failures = Counter("clm_decision_log_failures_total", "Decisions the log could not write",
                                    registry=self.registry)  # fmt: skip

    def loaded(self, role: str, models: ModelSet | None) -> None:
        if models is None:
            return
        for name, version in models.versions.items():
            self.model_version.labels(role, name, version).set(1)


def feature_errors(
    features: dict[str, Any], models: ModelSet, loc: tuple = ("body", "features")
) -> list[dict]:
    """Every unknown feature and every value of the wrong type, located under `loc` (for a 422)."""
    errors = []
    for name, value in features.items():
        feature = models.registry.get(name)
        if feature is None:
            msg, kind = f"unknown feature {name!r}", "unknown_feature"
        elif value is None:
            continue
        elif feature.dtype == "category":
            if isinstance(value, str):
                continue
            msg, kind = f"{name} must be a string or null", "string_type"
        elif isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            msg, kind = f"{name} must be a finite number or null", "float_type"
        else:
            continue
        errors.append({"loc": (*loc, name), "msg": msg, "type": kind})
    return errors


def request_digest(user_id: str | None, features: dict[str, Any]) -> str:
    """sha256 of the canonical request: the JSON of {"features", "user_id"} with sorted keys."""
    if not features:  # a stored user's GET: the same text, without building and sorting a dict
        blob = b'{"features": {}, "user_id": ' + json.dumps(user_id).encode() + b"}"
    else:
        blob = json.dumps({"user_id": user_id, "features": features}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def shadow_summary(decided: Decided) -> dict[str, Any]:
    """What the log keeps of the shadow models' decision: enough to compare it with the served one."""
    decision = decided.decision
    return {
        "versions": decision.versions.model_dump(),
        "action": decision.action.name,
        "expected_value": decision.action.expected_value,
        "stage": decision.stage.name,
        "churn": decision.churn.probability,
    }


def current_models(holder: ModelHolder) -> ModelSet:
    """The models serving now (raises NoModelsLoaded, with the last load error, when none are)."""
    models = holder.current
    if models is None:
        raise NoModelsLoaded(f"no models loaded: {holder.status.last_error}")
    return models


def missing_user_detail(user_id: str, store: OnlineStore) -> str:
    info = store.info()
    when = f"as of the store's snapshot {info.as_of}" if info else "(the store has no snapshot yet)"
    return f"user {user_id!r} has no features {when}"


class DecisionService:
    """Decides for the API: the models serving now, the user's stored row, the shadow models beside them,
    the metrics and the decision log. One per app, built in the lifespan once the store and log are open."""

    def __init__(
        self,
        scorer: Scorer,
        holder: ModelHolder,
        store: OnlineStore,
        decision_log: DecisionLog,
        metrics: Metrics,
        explore: bool = False,
        caches: DecisionCaches | None = None,
    ) -> None:
        self.scorer, self.holder, self.store, self.decision_log = scorer, holder, store, decision_log
        self.metrics, self.explore, self.caches = metrics, explore, caches

    def models(self) -> ModelSet:
        """The models serving now; called inside a route, so a request's 422 comes before a 503."""
        return current_models(self.holder)

    def stored(self, user_id: str) -> FeatureRow:
        row = self.store.read(user_id)
        if row is None:
            raise UnknownUser(missing_user_detail(user_id, self.store))
        return row

    def user_decision_body(self, models: ModelSet, user_id: str, lang: str) -> bytes:
        """The encoded decision for a stored user: the cached entry of (snapshot, versions, user, lang), the
        contacts logged since the snapshot applied, and a fresh decision id; logged like any decision. Falls
        back to the full decision when the set has no cache (none built, or the store had no snapshot)."""
        started = time.perf_counter()
        cache = None if self.caches is None else self.caches.get(models)
        if cache is None:
            row = self.stored(user_id)
            values = self.since_snapshot(models, user_id, row.as_of, row.values)
            return self.decide_and_log(models, values, user_id, row.as_of, lang, {})[1]
        entry = self.cached_entry(cache, user_id, lang)
        if entry is None:
            row = self.stored(user_id)  # UnknownUser (404) when the store has no row either
            values = self.since_snapshot(models, user_id, row.as_of, row.values)
            return self.decide_and_log(models, values, user_id, row.as_of, lang, {})[1]
        shadow = None
        shadow_models = self.holder.shadow
        if shadow_models is not None:
            shadow_cache = self.caches.get(shadow_models) if self.caches is not None else None
            other = None if shadow_cache is None else self.cached_entry(shadow_cache, user_id, lang)
            if other is None:
                row = self.stored(user_id)
                other_decided = self.scorer.decide(shadow_models, row.values, user_id=user_id, as_of=row.as_of,
                                                   lang=lang)  # fmt: skip
                shadow = shadow_summary(other_decided)
            else:
                shadow = {"versions": shadow_models.version_labels(), "action": other.action,
                          "expected_value": other.expected_value, "stage": other.stage, "churn": other.churn}  # fmt: skip
        decision_id = uuid.uuid4().hex
        encoded = cache.unpack(entry, decision_id, self.scorer.snapshot_json(cache.as_of, lang))
        body = encoded.body
        self.metrics.decisions.labels(entry.stage, entry.action).inc()
        self.decision_log.append(
            DecisionRecord(
                decision_id=decision_id, ts=dt.datetime.now(dt.UTC), user_id=user_id,
                request_digest=request_digest(user_id, {}), versions=models.version_labels(),
                stage=entry.stage, action=entry.action, propensity=entry.propensity, explored=entry.explored,
                expected_value=entry.expected_value, candidates=orjson.Fragment(encoded.candidates),  # type: ignore[arg-type]
                latency_ms=1000 * (time.perf_counter() - started), payload=orjson.Fragment(body),  # type: ignore[arg-type]
                inputs=orjson.Fragment(encoded.inputs), shadow=shadow,  # type: ignore[arg-type]
            )
        )  # fmt: skip
        return body

    def cached_entry(self, cache: DecisionCache, user_id: str, lang: str) -> Entry | None:
        """The user's cached entry with the contacts logged since the snapshot applied; None when the cache
        has none for the user (the caller decides in full: UnknownUser when the store has no row either)."""
        entry = cache.entry(user_id, lang, self.scorer, self.store)
        if entry is None:
            return None
        contacts = self.logged_since(cache.models, user_id, cache.since)
        return entry if contacts is None else cache.contacted(user_id, lang, contacts, self.scorer, entry)

    def logged_since(self, models: ModelSet, user_id: str, since: dt.datetime) -> Contacts | None:
        """What the user's decisions and outcomes logged at or after `since` (the snapshot's start) change in
        the snapshot's contact state: contacts (every action's days since, its contacts per window, the contact
        features) and negative outcomes recorded through POST /v1/outcomes; None when nothing was logged."""
        logged = self.decision_log.contacts_since(user_id, since)
        outcomes = self.decision_log.outcomes_since(user_id, since)
        if not logged and not outcomes:  # a user with nothing logged since the snapshot: the row as stored
            return None
        return Contacts.since_snapshot(models.policy, logged, outcomes, dt.datetime.now(dt.UTC))

    def since_snapshot(self, models: ModelSet, user_id: str, as_of: dt.date, values: Any) -> dict[str, Any]:
        """A stored row's values with the contacts and outcomes logged since its snapshot applied."""
        contacts = self.logged_since(models, user_id, dt.datetime.combine(as_of, dt.time.min, dt.UTC))
        return dict(values) if contacts is None else contacts.applied(values)

    def decide_request(self, body: DecisionRequest, models: ModelSet, lang: str) -> Decision:
        """The decision for a validated request (its features checked by `feature_errors`): the user's stored
        row, if any, overridden by the posted features."""
        return self.decide_request_encoded(body, models, lang)[0]

    def decide_request_encoded(
        self, body: DecisionRequest, models: ModelSet, lang: str
    ) -> tuple[Decision, bytes]:
        """`decide_request` with the decision's JSON, encoded once for the response and the log."""
        values: dict[str, Any] = {}
        as_of = None
        if body.user_id is not None:  # the stored row, with what was logged for the user since its snapshot
            row = self.stored(body.user_id)
            values.update(self.since_snapshot(models, body.user_id, row.as_of, row.values))
            as_of = row.as_of
        values.update(body.features)
        return self.decide_and_log(models, values, body.user_id, as_of, lang, body.features)

    def decide_and_log(
        self,
        models: ModelSet,
        values: dict,
        user_id: str | None,
        as_of: dt.date | None,
        lang: str,
        features: dict,
    ) -> tuple[Decision, bytes]:
        """Decide, score the shadow models beside it (logged, never returned), count and log the decision;
        the decision and its JSON (pydantic-core's serializer, once: the response body and the log's payload)."""
        started = time.perf_counter()
        digest = request_digest(user_id, features)
        decided = self.scorer.decide(models, values, user_id=user_id, as_of=as_of, lang=lang, explore=self.explore,
                                     request_key=digest)  # fmt: skip
        shadow = None
        shadow_models = self.holder.shadow
        if shadow_models is not None:
            other = self.scorer.decide(shadow_models, values, user_id=user_id, as_of=as_of, lang=lang)
            shadow = shadow_summary(other)
        decision = decided.decision
        encoded = decision.__pydantic_serializer__.to_json(decision)
        self.metrics.decisions.labels(decision.stage.name, decision.action.name).inc()
        self.decision_log.append(
            DecisionRecord(
                decision_id=decision.decision_id, ts=dt.datetime.now(dt.UTC), user_id=user_id,
                request_digest=digest, versions=decision.versions.model_dump(),
                stage=decision.stage.name, action=decision.action.name, propensity=decided.propensity,
                explored=decided.explored, expected_value=decision.action.expected_value,
                candidates=decided.candidates, latency_ms=1000 * (time.perf_counter() - started),
                payload=orjson.Fragment(encoded),  # type: ignore[arg-type]
                inputs=orjson.Fragment(orjson.dumps(decided.inputs, option=orjson.OPT_NON_STR_KEYS)),  # type: ignore[arg-type]
                shadow=shadow,
            )
        )  # fmt: skip
        return decision, encoded
