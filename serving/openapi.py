"""The API's documentation, served by the app itself: Swagger UI at /docs from the assets packaged in
`fastapi-offline` (nothing from a CDN, so the page works without internet), and an OpenAPI
document with the API key as a security scheme (the Authorize button), an example response for every
operation and the error statuses each operation can answer (401, 403, 404, 413, 422, 503)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-assets"

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
ERRORS: dict[int, tuple[str, str]] = {
    401: ("No API key, or an unknown one (header X-API-Key)", "missing API key (header X-API-Key)"),
    403: ("The API key lacks the scope this route needs", "this API key lacks the 'admin' scope"),
    404: ("Not found", "user 'u999999' has no features as of the store's snapshot 2026-11-30"),
    409: ("This outcome is already recorded with another action, time or value",
          "outcome 'retained' of decision '3f2a…' is already recorded with value 12.0 (this request: 10.0)"),
    413: ("The request body (or batch) is larger than the limit", "request body larger than 2000000 bytes"),
    503: ("Not ready (no models loaded), a failed reload, or a decision the log could not commit",
          "no models loaded: ModelsMissing: clm-churn@champion"),
}  # fmt: skip
UNPROCESSABLE_EXAMPLE = {
    "detail": [
        {
            "loc": ["body", "features", "tenure_dayz"],
            "msg": "unknown feature 'tenure_dayz'",
            "type": "unknown_feature",
        }
    ]
}

VERSIONS = {
    "churn_model": "clm-churn/3",
    "upgrade_model": "clm-upgrade/2",
    "reactivation_model": "clm-reactivation/1",
    "policy": "clm-policy/4",
    "features": "f-c5a0a1192b",
}
_TERMS = {
    "stay_outcome": "churn", "delta_stay": 0.031, "delta_stay_se": 0.012, "delta_stay_source": "model",
    "delta_upgrade": 0.0, "delta_upgrade_se": 0.004, "delta_upgrade_source": "prior",
    "value_if_retained": 412.5, "upgrade_value": 96.0, "retention_value": 12.7875, "upgrade_gain": 0.0,
    "cost": 5.0, "expected_value": 7.7875, "source": "model",
}  # fmt: skip
_NO_ACTION = {**_TERMS, "delta_stay": 0.0, "delta_stay_se": 0.0, "delta_stay_source": "definition",
              "delta_upgrade_se": 0.0, "delta_upgrade_source": "definition", "retention_value": 0.0,
              "cost": 0.0, "expected_value": 0.0, "source": "definition"}  # fmt: skip
DECISION_EXAMPLE: dict[str, Any] = {
    "user_id": "u000042",
    "as_of": "2026-11-30",
    "stage": {"name": "at_risk", "rule": "at_risk: churn risk of 25 % or more (churn_probability >= 0.25)",
              "since": None},
    "churn": {"probability": 0.41, "band": "high", "scored_by": "clm-churn/3", "return_probability": None,
              "note": None},
    "upgrade": {"probability": 0.06, "value": 96.0},
    "clv": 188.4,
    "value": {"currency": "USD", "value_if_retained": 412.5, "margin_if_retained_month": 36.4,
              "retained_churn_month": 0.031, "upgrade_value": 96.0, "clv": 188.4},
    "action": {**_TERMS, "name": "retention_discount", "channel": "email", "propensity": 0.912,
               "explored": False, "control_group": False, "holdout": None,
               "intended_action": "retention_discount"},
    "alternatives": [
        {**_TERMS, "name": "retention_discount", "status": "chosen",
         "reason": "largest positive expected value among eligible actions"},
        {**_TERMS, "name": "satisfaction_survey", "status": "eligible", "delta_stay": 0.008,
         "retention_value": 3.3, "cost": 0.5, "expected_value": 2.8, "reason": "eligible, lower value"},
        {**_NO_ACTION, "name": "no_action", "status": "eligible", "reason": "always a candidate, worth 0"},
    ],
    "explanations": {
        "churn": {"base_value": -1.62, "raw_score": -0.36, "top": [
            {"feature": "days_since_last_event", "value": 19.0, "contribution": 0.71,
             "reason": "19 days since the last activity"},
            {"feature": "active_days_30d", "value": 2.0, "contribution": 0.38,
             "reason": "active on only 2 of the last 30 days"},
        ]},
    },
    "versions": VERSIONS,
    "decision_id": "5b0e4c1d9a6f4e2b8c3d7a1f0e9b6c2d",
    "missing_features": [],
    "snapshot": {"date": "2026-11-30", "age_days": 2, "stale_after_days": 45, "stale": False, "warning": None},
}  # fmt: skip
STORE = {"as_of": "2026-11-30", "users": 2000, "feature_version": "f-c5a0a1192b"}
WORKER = {"pid": 4242, "versions": VERSIONS, "shadow": None, "loaded_at": "2026-12-01T09:00:00+00:00",
          "reload_generation": 3, "last_reload_error": None, "reload_failures": 0}  # fmt: skip

# Example 200 bodies by (method, path); a route missing here fails tests/serving/test_docs_openapi.py.
RESPONSE_EXAMPLES: dict[tuple[str, str], Any] = {
    ("get", "/v1/users/{user_id}/decision"): DECISION_EXAMPLE,
    ("post", "/v1/decisions"): {**DECISION_EXAMPLE, "user_id": None, "as_of": None,
                                "missing_features": ["sessions_7d", "revenue_sum_30d"], "snapshot": None},
    ("post", "/v1/decisions/batch"): {"items": [
        {"decision": DECISION_EXAMPLE, "error": None},
        {"decision": None, "error": {"status": 404, "detail": "user 'u999999' has no features as of the "
                                                             "store's snapshot 2026-11-30"}},
    ]},
    ("post", "/v1/outcomes"): {"decision_id": DECISION_EXAMPLE["decision_id"], "outcome": "retained",
                               "status": "recorded"},
    ("get", "/v1/models"): {"alias": "champion", "versions": VERSIONS, "shadow": None,
                            "loaded_at": "2026-12-01T09:00:00Z", "store": STORE, "workers": [WORKER]},
    ("post", "/v1/admin/reload"): {"reloaded": True, "versions": VERSIONS},
    ("get", "/healthz"): {"status": "ok"},
    ("get", "/readyz"): {"ready": True, "models": VERSIONS, "store": {"as_of": "2026-11-30", "users": 2000},
                         "last_reload_error": None, "reload_failures": 0,
                         "decision_log": {"written": 1200, "failed": 0, "retries": 0, "overflow": 0, "commits": 40,
                                          "duplicates": 0, "pending": 0},
                         "worker": 4242, "workers": [WORKER]},
    ("get", "/metrics"): '# HELP clm_decisions_total Decisions by stage and action\n'
                         '# TYPE clm_decisions_total counter\n'
                         'clm_decisions_total{action="retention_discount",stage="at_risk"} 118.0\n',
}  # fmt: skip


def _error_schema() -> dict[str, Any]:
    return {
        "title": "Error",
        "type": "object",
        "properties": {
            "detail": {"type": "string", "description": "What went wrong, in words"},
            "error_id": {"type": "string", "description": "500 only: the id to look up in the server log"},
        },
        "required": ["detail"],
    }


def _error(status: int) -> dict[str, Any]:
    description, example = ERRORS[status]
    return {"description": description, "content": {"application/json": {**_ERROR["application/json"],
                                                                          "example": {"detail": example}}}}  # fmt: skip


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document with examples and error responses added to what FastAPI generates."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes,
        tags=app.openapi_tags, servers=app.servers,
    )  # fmt: skip
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _error_schema()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            example = RESPONSE_EXAMPLES.get((method, path))
            ok = responses.get("200")
            if ok is not None and example is not None:
                for content in ok.setdefault("content", {"application/json": {}}).values():
                    content["example"] = copy.deepcopy(example)
            statuses = []
            if operation.get("security"):
                statuses += [401, 403]
            if "{" in path:
                statuses.append(404)
            if "requestBody" in operation:
                statuses.append(413)
            if path.startswith("/v1/") and path != "/v1/outcomes":  # no models, a failed reload, not logged
                statuses.append(503)
            statuses += [status for status in ERRORS if str(status) in responses]  # declared by the route
            for status in dict.fromkeys(statuses):
                existing = responses.get(str(status), {})
                responses[str(status)] = {
                    **_error(status),
                    **{k: v for k, v in existing.items() if k != "content"},
                }
            if path == "/v1/outcomes" and "404" in responses:
                example = {"detail": f"no decision {DECISION_EXAMPLE['decision_id']!r} in the decision log"}
                responses["404"]["content"]["application/json"]["example"] = example
            if "422" in responses:
                for content in responses["422"].get("content", {}).values():
                    content["example"] = UNPROCESSABLE_EXAMPLE
    return schema


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs from the packaged assets, and the documented OpenAPI."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} — Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": False},
        )  # fmt: skip

    app.add_api_route("/docs", docs, include_in_schema=False, response_class=HTMLResponse)
    # No ReDoc: its page loads its logo from its vendor's CDN, which a page of ours may not do.

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
