"""The reviewer pages through FastAPI's TestClient over the trained world: auth (401 with a sign-in form, 403,
the session cookie), no-store and no inline script or style on every page, the overview's numbers against an
independent computation, a user's page (stage, reasons, waterfalls, the value breakdown that adds up, zh), a
readable 404, and the replay of a logged decision that reproduces — and says so when it does not."""

from __future__ import annotations

import html as html_lib
import json
import re

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from clm.config import load_config
from models.overview import population_decisions
from serving.app import create_app
from serving.review import CSP, SESSION_COOKIE, compare_replay
from serving.settings import ServingSettings
from tests.conftest import mlflow_store

REVIEW = {"X-API-Key": "review-key"}
SCORE = {"X-API-Key": "score-key"}
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def review_client(served_world, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("review-log")
    with pytest.MonkeyPatch.context() as mp, mlflow_store(served_world.tracking_uri):
        mp.setenv(
            "CLM_API_KEYS",
            json.dumps({"score-key": ["score"], "review-key": ["review"], "admin-key": ["admin"]}),
        )
        mp.setenv("CLM_ONLINE_STORE", served_world.store_url)
        mp.setenv("CLM_DECISION_LOG", f"sqlite:///{log_dir / 'decisions.db'}")
        mp.setenv("CLM_EVENTS_DIR", str(served_world.data))
        mp.setenv("CLM_EXPLORATION", "false")
        app = create_app(load_config(), ServingSettings())
        with TestClient(app, raise_server_exceptions=False) as client:
            client.world = served_world
            yield client


def _cells(html: str, table_id: str) -> list[list[str]]:
    """The text of each body row's cells of the table with this id."""
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
            for row in rows]  # fmt: skip


@pytest.mark.parametrize("path", ["/review", "/review/users/u000001", "/review/decisions/abc"])
def test_pages_need_the_review_scope(review_client, path) -> None:
    missing = review_client.get(path)
    assert missing.status_code == 401
    assert "text/html" in missing.headers["content-type"]
    assert 'action="/review/login"' in missing.text and 'name="api_key"' in missing.text
    assert review_client.get(path, headers={"X-API-Key": "nope"}).status_code == 401
    forbidden = review_client.get(path, headers=SCORE)
    assert forbidden.status_code == 403 and "review scope" in forbidden.text


def test_login_sets_a_session_cookie_never_the_key(review_client) -> None:
    same_site = {"Origin": "http://testserver"}

    def login(**form: str):
        return review_client.post("/review/login", data=form, headers=same_site, follow_redirects=False)

    wrong = login(api_key="score-key", next="/review")
    assert wrong.status_code == 403 and "review scope" in wrong.text
    unknown = login(api_key="nope")
    assert unknown.status_code == 401
    offsite = login(api_key="review-key", next="https://evil.example/x")
    assert offsite.status_code == 303 and offsite.headers["location"] == "/review"
    ok = login(api_key="review-key", next="/review/users/u000001")
    assert ok.status_code == 303 and ok.headers["location"] == "/review/users/u000001"
    cookie = ok.headers["set-cookie"]
    assert "review-key" not in cookie and f"{SESSION_COOKIE}=v1." in cookie and "HttpOnly" in cookie
    assert review_client.get("/review").status_code == 200  # the session cookie opens the pages
    review_client.cookies.clear()
    assert review_client.get("/review", cookies={"clm_review_key": "review-key"}).status_code == 401


def test_every_page_is_not_stored_and_needs_no_inline_script_or_style(review_client) -> None:
    """The figures included: their SVG carries presentation attributes, not style attributes or elements."""
    user = review_client.world.user_ids[4]
    decision = review_client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    for path in ("/review", f"/review/users/{user}", f"/review/decisions/{decision['decision_id']}"):
        response = review_client.get(path, headers=REVIEW)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-security-policy"] == CSP and "unsafe-inline" not in CSP
        assert "<svg" in response.text
        inline = re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", response.text)
        assert inline is None, (path, response.text[inline.start() - 200 : inline.end() + 100])


def test_the_overview_counts_what_the_policy_decides_for_the_snapshot(review_client) -> None:
    response = review_client.get("/review", headers=REVIEW)
    assert response.status_code == 200, response.text
    html = response.text
    assert response.headers["content-security-policy"] == CSP
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    for section in ("stages", "actions", "calibration", "top-users", "versions"):
        assert f'id="{section}"' in html
    assert html.count("<svg") >= 5  # stage mix, action mix, scores, calibration, lift

    # independently: the policy's decisions for every user in the store's snapshot
    store_rows = review_client.app.state.store
    rows = store_rows.read_many(store_rows.user_ids())
    frame = pd.DataFrame([r.values for r in rows.values()]).assign(user_id=list(rows))
    models = review_client.app.state.holder.current
    expected = population_decisions(frame, models.churn, models.upgrade, models.policy)
    as_of = str(store_rows.info().as_of)
    counts = {row[0]: row[1:] for row in _cells(html, "stage-counts")}
    header = re.findall(
        r'class="badge stage-(\w+)"', html.split('id="stage-counts"', 1)[1].split("</thead>", 1)[0]
    )
    shown = {stage: int(value.replace(",", "")) for stage, value in zip(header, counts[as_of], strict=True)}
    assert shown == {s: int(n) for s, n in expected["stage"].value_counts().items() if s in shown}
    assert sum(shown.values()) == len(rows)
    mix = {row[0]: int(row[1].replace(",", "")) for row in _cells(html, "action-mix")}
    assert mix == {a: int(n) for a, n in expected["action"].value_counts().items()}
    total = float(expected["expected_value"].sum())
    currency = load_config().value.currency
    assert re.search(rf'id="total-value">([\d,.-]+) {currency}<', html).group(1) == f"{total:,.0f}"
    # earlier cutoffs come from the event data; the calibration uses a cutoff whose labels are known
    assert len(counts) == 4
    assert "labels known for" in html


def test_top_users_link_to_their_pages_and_leave_out_the_lapsed(review_client) -> None:
    html = review_client.get("/review", headers=REVIEW).text
    rows = _cells(html, "top-table")
    assert rows
    links = re.findall(r'class="user-link" href="(/review/users/[^"?]+)\?lang=en"', html)
    assert len(links) == len(rows)
    risky = [row for row in rows if row[-1] == "high risk"]
    assert risky and all(row[1] != "dormant" for row in risky)


def test_a_users_page_shows_the_decision_and_why(review_client) -> None:
    user = review_client.world.user_ids[3]
    api = review_client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    response = review_client.get(f"/review/users/{user}", headers=REVIEW)
    assert response.status_code == 200, response.text
    html = html_lib.unescape(response.text)
    assert f'id="stage">{api["stage"]["name"]}<' in html
    assert api["stage"]["rule"] in re.sub(r"<[^>]+>", "", html)  # the rule's condition is set apart as code
    assert f'id="action">{api["action"]["name"]}<' in html
    for model in ("churn", "upgrade"):
        for contribution in api["explanations"][model]["top"]:
            assert contribution["reason"] in html
        figure = html.split(f'id="waterfall-{model}"', 1)[1].split("</svg>", 1)[0]
        assert "<svg" in figure and "SHAP waterfall" in figure
    # the value breakdown: retention value + upgrade gain − cost = the expected value, for every action
    breakdown = _cells(html, "breakdown")
    assert len(breakdown) == len(api["alternatives"])
    for (
        name,
        _status,
        _stay,
        _retained,
        retention,
        _up,
        _upgrade,
        growth,
        cost,
        value,
        source,
        _why,
    ) in breakdown:
        currency = api["value"]["currency"]
        assert all(x.endswith(f" {currency}") for x in (retention, growth, cost, value)), name
        parts = [float(x.removesuffix(f" {currency}").replace(",", "")) for x in (retention, growth, cost)]
        assert sum(parts) == pytest.approx(
            float(value.removesuffix(f" {currency}").replace(",", "")), abs=0.011
        )
        assert source.split(" / ")[0] in {"model", "prior", "definition"}
    chosen = [row for row in breakdown if row[1] == "chosen"]
    assert [row[0] for row in chosen] == [api["action"]["name"]]
    assert _cells(html, "timeline") and _cells(html, "events")
    assert not EXTERNAL.search(html)


def test_waterfalls_are_drawn_once_per_model_version_and_row(review_client, monkeypatch) -> None:
    from models import plots
    from serving.review import WaterfallCache

    drawn: list[str] = []
    draw = plots.waterfall_figure

    def counting(*args, **kwargs):
        drawn.append(kwargs["title"])
        return draw(*args, **kwargs)

    monkeypatch.setattr(plots, "waterfall_figure", counting)
    models = review_client.app.state.holder.current
    store = review_client.app.state.store
    first, second = (dict(store.read(u).values) for u in review_client.world.user_ids[:2])
    cache = WaterfallCache(size=2)
    svg = cache.svg(models, "churn", first)
    assert cache.svg(models, "churn", first) == svg and len(drawn) == 1
    assert "<svg" in svg and 'id="waterfall-churn-' in svg
    cache.svg(models, "upgrade", first)  # another model: its own figure
    changed = {**first, "days_since_last_event": (first["days_since_last_event"] or 0) + 30}
    assert cache.svg(models, "churn", changed) != svg  # another row: its own figure
    assert len(drawn) == 3
    cache.svg(models, "churn", second)  # the cache holds two: (first, churn) went out with `changed`
    cache.svg(models, "churn", first)
    assert len(drawn) == 5


def test_the_users_page_in_chinese(review_client) -> None:
    user = review_client.world.user_ids[3]
    api = review_client.get(f"/v1/users/{user}/decision?lang=zh", headers=SCORE).json()
    html = html_lib.unescape(review_client.get(f"/review/users/{user}?lang=zh", headers=REVIEW).text)
    assert 'lang="zh-CN"' in html and "流失评分的原因" in html and "每个动作的期望价值" in html
    assert api["explanations"]["churn"]["top"][0]["reason"] in html


def test_an_unknown_user_gets_a_readable_404_page(review_client) -> None:
    response = review_client.get("/review/users/no-such-user", headers=REVIEW)
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    assert (
        "No user no-such-user as of the store&#39;s snapshot" in response.text
        and "Back to the overview" in response.text
    )
    hostile = review_client.get("/review/users/<img src=x onerror=alert(1)>", headers=REVIEW)
    assert hostile.status_code == 404
    assert "<img src=x" not in hostile.text and "&lt;img src=x onerror=alert(1)&gt;" in hostile.text
    missing = review_client.get("/review/decisions/0123456789abcdef", headers=REVIEW)
    assert missing.status_code == 404 and "No decision" in missing.text


def test_a_logged_decision_is_replayed_and_reproduces(review_client) -> None:
    user = review_client.world.user_ids[5]
    decision = review_client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    response = review_client.get(f"/review/decisions/{decision['decision_id']}", headers=REVIEW)
    assert response.status_code == 200, response.text
    html = response.text
    assert (
        'id="replay-result">Re-run under the same versions with the logged inputs: the decision reproduces.'
        in html
    )
    assert f'id="action">{decision["action"]["name"]}<' in html
    assert decision["versions"]["churn_model"] in html
    assert html.count("SHAP waterfall") == 2
    # and the user's page lists it
    page = review_client.get(f"/review/users/{user}", headers=REVIEW).text
    assert f"/review/decisions/{decision['decision_id']}" in page


def test_a_replay_that_does_not_reproduce_says_what_differs(review_client) -> None:
    user = review_client.world.user_ids[5]
    decision = review_client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    log = review_client.app.state.decision_log
    assert log.flush()
    logged = log.get_decision(decision["decision_id"])
    models = review_client.app.state.holder.current
    from serving.scorer import Scorer

    again = Scorer(load_config().serving).decide(models, logged["inputs"], user_id=user, as_of=None)
    rules = models.policy.stage_rules
    assert compare_replay(logged, again, rules) == []
    # re-run in the other language: the same rule, said otherwise, is no difference
    in_chinese = Scorer(load_config().serving).decide(
        models, logged["inputs"], user_id=user, as_of=None, lang="zh"
    )
    assert in_chinese.decision.stage.rule != logged["payload"]["stage"]["rule"]
    assert compare_replay(logged, in_chinese, rules) == []
    logged["payload"]["churn"]["probability"] += 0.01
    logged["candidates"][0]["expected_value"] += 1.0
    differences = compare_replay(logged, again, rules)
    assert len(differences) == 2
    assert differences[0].startswith("churn probability: logged")
    assert differences[1].startswith(f"{logged['candidates'][0]['name']} expected value")


def test_a_replay_regenerates_its_reasons_in_the_readers_language(review_client) -> None:
    """A decision made in Chinese, replayed in English: English reasons and rule, no Chinese outside data values;
    and the other way round."""
    user = review_client.world.user_ids[4]
    for made, read in (("zh", "en"), ("en", "zh")):
        decision = review_client.get(f"/v1/users/{user}/decision?lang={made}", headers=SCORE).json()
        reread = review_client.get(f"/v1/users/{user}/decision?lang={read}", headers=SCORE).json()
        html = html_lib.unescape(
            review_client.get(f"/review/decisions/{decision['decision_id']}?lang={read}", headers=REVIEW).text
        )
        assert 'class="ok" id="replay-result"' in html  # it reproduces
        said = {c["reason"] for c in decision["alternatives"]} | {decision["stage"]["rule"]}
        for model in ("churn", "upgrade"):
            said |= {c["reason"] for c in decision["explanations"][model]["top"]}
        expected = {c["reason"] for c in reread["alternatives"]}
        for model in ("churn", "upgrade"):
            expected |= {c["reason"] for c in reread["explanations"][model]["top"]}
        text = re.sub(r"<[^>]+>", "", html)
        assert all(reason in text for reason in expected), (made, read)
        assert not [reason for reason in said - expected if reason in text], (made, read)
        assert reread["stage"]["rule"] in text


def test_replays_load_other_versions_from_the_registry(review_client) -> None:
    from serving.review import ReplayModels
    from serving.state import RegistryLoader

    serving = review_client.app.state.holder.current
    replays = ReplayModels(RegistryLoader(load_config()))
    loaded = replays.get(serving.version_labels(), None)
    assert loaded is not serving and loaded.versions == serving.versions
    assert replays.get(serving.version_labels(), None) is loaded  # kept
    rng = np.random.default_rng(0)
    row = {n: float(v) for n, v in zip(serving.churn.feature_names, rng.random(5), strict=False)}
    from models.frame import encode_row
    from models.scoring import score_matrix

    a = score_matrix(encode_row(row, serving.churn.feature_names, serving.churn.categories), serving.churn)
    b = score_matrix(encode_row(row, loaded.churn.feature_names, loaded.churn.categories), loaded.churn)
    assert a == b


def test_without_event_data_the_overview_uses_the_store_and_says_what_is_missing(
    served_env, monkeypatch
) -> None:
    monkeypatch.delenv("CLM_EVENTS_DIR", raising=False)
    app = create_app(load_config(), ServingSettings())
    with TestClient(app) as client:
        html = client.get("/review", headers=REVIEW).text
        assert 'id="no-history"' in html and "CLM_EVENTS_DIR" in html
        counts = _cells(html, "stage-counts")
        assert len(counts) == 1
        assert sum(int(x.replace(",", "")) for x in counts[0][1:]) == len(served_env.user_ids)
        user = client.get(f"/review/users/{served_env.user_ids[0]}", headers=REVIEW)
        assert user.status_code == 200 and "CLM_EVENTS_DIR" in user.text
