"""The campaign report: `clm report` on the served world (models and policy @champion, simulator truth) writes
one self-contained HTML file whose numbers agree with the building blocks computed independently, that
refuses bad input with a clear message, and that a real browser opens without a single network request."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from clm.cli import app
from clm.config import load_config
from features.build import LabelParams
from features.jobs import feature_history, latest_features
from features.registry import FeatureParams
from models.arbitration import control_group
from models.catalog import contact_params
from models.decision import load_decision_models
from models.overview import population_decisions
from models.plots import figure_svg, score_distribution_figure
from models.population import lapsed
from tests.conftest import ServedWorld, mlflow_store
from training.evaluate_policy import POLICIES
from training.report import format_value, months_before, stage_cutoffs

runner = CliRunner()
AS_OF = "2025-09-01"  # a monthly truth cutoff and campaign wave of the served world (data ends 2025-09-28)
BUDGET = 150.0
CHROMIUM = "/usr/bin/chromium"
HEADINGS = [
    "Summary", "Stage mix", "Actions and budget", "Score distributions", "Top global drivers", "Calibration",
    "Policy evaluation", "Measured lift", "Drift against the training snapshot", "Lifecycle analytics",
]  # fmt: skip
# An attribute or CSS url() that points off the page: http(s):// or protocol-relative //.
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|xlink:href)\s*=\s*["']?\s*|url\(\s*["']?\s*)(?:https?:)?//""", re.I
)


class Page(HTMLParser):
    """What the tests read from a report: headings, tables (cell text and data-value), references, title."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.headings: list[str] = []
        self.tables: dict[str, list[list[list[str | None]]]] = {}
        self.references: list[str] = []
        self.ids: list[str] = []
        self._in: str | None = None
        self._rows: list | None = None
        self._cell: list | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.references += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]
        if attributes.get("id"):
            self.ids.append(attributes["id"])
        if tag in ("title", "h2"):
            self._in = tag
            if tag == "h2":
                self.headings.append("")
        elif tag == "table":
            self._rows = self.tables.setdefault(attributes.get("id") or "", [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._rows:
            self._cell = ["", attributes.get("data-value")]
            self._rows[-1].append(self._cell)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("title", "h2"):
            self._in = None
        elif tag == "table":
            self._rows = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title += data
        elif self._in == "h2":
            self.headings[-1] += data.strip()
        elif self._cell is not None:
            self._cell[0] += data.strip()

    def table(self, table_id: str) -> tuple[list[str], dict[str, list[list[str | None]]]]:
        """A table's header texts and its body rows keyed by their first cell's text."""
        rows = self.tables[table_id]
        return [c[0] for c in rows[0]], {r[0][0]: r for r in rows[1:]}


def number(cell: list[str | None]) -> float:
    """A numeric cell's value, read from its text (thousands separators, the typographic minus)."""
    return float(cell[0].replace(",", "").replace("−", "-").rstrip("%"))


@dataclass(frozen=True)
class Report:
    path: Path
    html: str
    page: Page
    output: str
    world: ServedWorld


@pytest.fixture(scope="module")
def report_world(served_world: ServedWorld):
    """The served world's MLflow store made current for this module."""
    with mlflow_store(served_world.tracking_uri):
        yield served_world


@pytest.fixture(scope="module")
def report(report_world: ServedWorld, tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("report") / "campaign.html"
    args = [
        "report",
        "--data",
        str(report_world.data),
        "--as-of",
        AS_OF,
        "--out",
        str(out),
        "--budget",
        str(BUDGET),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    html = out.read_text(encoding="utf-8")
    return Report(out, html, Page(html), result.output, report_world)


@pytest.fixture(scope="module")
def independent(report_world: ServedWorld) -> pd.DataFrame:
    """Every user's decision at the as-of date from the building blocks: the frame `clm score` scores, the
    @champion models and policy, `population_decisions`."""
    config = load_config()
    models = load_decision_models(config, aliases=("champion",))
    frame, _ = latest_features(
        report_world.data,
        params=FeatureParams.from_config(config.features),
        as_of=dt.date.fromisoformat(AS_OF),
        contacts=contact_params(config, models.policy.catalog, models.policy.contact),  # as `clm score` reads
    )
    return population_decisions(
        frame, models.churn, models.upgrade, models.policy, reactivation=models.reactivation
    )


# ------------------------------------------------------------------------------------------------------
# The file


def test_report_is_one_file_with_every_section_and_its_header(report: Report) -> None:
    assert report.path.stat().st_size > 50_000
    assert str(report.path) in report.output and "to contact" in report.output
    assert report.page.title == f"clm campaign report — as of {AS_OF}"
    assert report.page.headings == HEADINGS
    header = {row[0][0]: row[1][0] for row in report.page.tables["report-header"]}
    assert header["as of"] == AS_OF
    assert header["data"] == str(report.world.data.resolve())
    assert header["churn model"].startswith("clm-churn/") and header["churn model"].endswith("@champion")
    assert header["policy"].startswith("clm-policy/") and header["policy"].endswith("@champion")
    assert header["simulator truth"] == str((report.world.data / "truth").resolve())
    assert "shipped defaults" in header["config"] and "digest" in header["config"]
    assert dt.datetime.strptime(header["generated at"], "%Y-%m-%d %H:%M:%S %Z")
    assert len(report.page.ids) == len(set(report.page.ids)), "element ids repeat across figures"


def test_report_references_nothing_outside_itself(report: Report) -> None:
    assert not EXTERNAL.search(report.html), EXTERNAL.search(report.html)
    assert "http://" not in report.html and "https://" not in report.html
    assert all(ref.startswith(("#", "data:image/png;base64,")) for ref in report.page.references), {
        ref[:60] for ref in report.page.references
    }
    assert not re.search(r"<(?:script|link|iframe|object|embed)\b", report.html, re.I)


def test_report_holds_its_figures_inline(report: Report) -> None:
    # stage share, action mix, score distributions, reliability and lift for both models
    assert report.html.count("<svg") >= 7
    beeswarms = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report.html)
    assert len(beeswarms) == 2  # the churn and the upgrade model
    assert all(len(b) > 10_000 for b in beeswarms)


def test_stage_and_action_counts_equal_population_decisions(
    report: Report, independent: pd.DataFrame
) -> None:
    header, rows = report.page.table("stage-counts")
    now = header.index(f"{AS_OF} (as of)")
    expected = independent["stage"].value_counts()
    assert {
        stage: int(number(row[now])) for stage, row in rows.items() if stage != "all users"
    } == expected.to_dict()
    assert int(number(rows["all users"][now])) == len(independent)
    assert len(header) == 1 + 4 + 1  # as-of plus three monthly cutoffs, then the change

    header, rows = report.page.table("action-mix")
    users = header.index("users")
    assert {action: int(number(row[users])) for action, row in rows.items()} == (
        independent["action"].value_counts().to_dict()
    )
    value = header.index("Σ expected value (USD)")
    assert sum(float(row[value][1]) for row in rows.values()) == pytest.approx(
        independent["expected_value"].sum()
    )
    # the budget table's first row is the policy's choice with the global control group held out (as
    # `clm score --budget` plans it)
    policy = load_config().policy
    held = control_group(
        independent["user_id"].astype(str).tolist(), policy.control_share, policy.control_salt
    )
    contacted = (independent["action"] != "no_action").to_numpy()
    assert number(report.page.tables["budget"][1][1]) == (contacted & ~held).sum()


def test_budget_plan_is_the_one_clm_score_makes(report: Report, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["score", "--data", str(report.world.data), "--as-of", AS_OF, "--out", str(tmp_path / "s.csv"),
              "--budget", str(BUDGET)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("budget "))
    figures = [float(x.replace(",", "")) for x in re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?", line)]
    _budget, contacts, cost, value, free_contacts, free_cost, free_value = figures
    _, rows = report.page.table("budget")
    policy, plan = list(rows.values())
    assert [number(c) for c in plan[1:4]] == [
        contacts,
        pytest.approx(cost, abs=0.01),
        pytest.approx(value, abs=0.01),
    ]
    assert [number(c) for c in policy[1:4]] == [
        free_contacts, pytest.approx(free_cost, abs=0.01), pytest.approx(free_value, abs=0.01)
    ]  # fmt: skip
    assert cost <= BUDGET < free_cost  # the budget binds, so the plan is not the policy's choice


def test_calibration_names_its_cutoff_and_users(report: Report) -> None:
    config = load_config()
    models = load_decision_models(config, aliases=("champion",))
    cutoff = dt.date.fromisoformat(AS_OF) - dt.timedelta(days=models.churn.horizon_days)
    history = feature_history(
        report.world.data, [cutoff], params=FeatureParams.from_config(config.features),
        label_params=LabelParams.from_config(config.labels, horizon_days=models.churn.horizon_days),
    )  # fmt: skip
    # each model is measured on the population it scores: the churn model on the users alive at the cutoff
    alive = ~lapsed(history, models.churn.horizon_days)
    closed = int(history.loc[alive, "churn"].notna().sum())
    closed_lapsed = int(history.loc[~alive, "reactivation"].notna().sum())
    assert closed > 1000 and closed_lapsed > 100
    line = re.search(r'<p id="calibration-line">(.*?)</p>', report.html, re.S).group(1)
    assert f"churn: cutoff {cutoff}, {closed:,} users with a closed label" in line
    assert f"reactivation: cutoff {cutoff}, {closed_lapsed:,} users with a closed label" in line
    _, rows = report.page.table("calibration-table")
    assert rows["churn"][1][0] == "alive" and rows["reactivation"][1][0] == "lapsed"
    assert rows["churn"][2][0] == str(cutoff) and int(number(rows["churn"][3])) == closed
    assert 0.0 <= number(rows["churn"][6]) < 0.1  # ECE of the served, calibrated churn model


def test_policy_table_is_evaluated_against_the_worlds_truth(report: Report) -> None:
    header, rows = report.page.table("policy-table")
    assert len(rows) == len(POLICIES)
    values = {
        label: number(row[header.index("true value / 1,000 users (USD)")]) for label, row in rows.items()
    }
    oracle = next(label for label in rows if label.startswith("oracle"))
    assert number(rows[oracle][header.index("÷ oracle")]) == 1.0
    assert values[next(label for label in rows if label.startswith("contact nobody"))] == 0.0
    assert values[next(label for label in rows if label.startswith("clm policy"))] > 0
    assert 'id="policy-note"' not in report.html


# ------------------------------------------------------------------------------------------------------
# Without truth and without a budget


def test_without_truth_or_budget_the_report_says_so(report_world: ServedWorld, tmp_path: Path) -> None:
    data = tmp_path / "no-truth"
    data.mkdir()
    for source in report_world.data.glob("*.parquet"):
        (data / source.name).symlink_to(source)
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", "--data", str(data), "--as-of", AS_OF, "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    assert page.headings == HEADINGS
    note = re.search(r'<p class="note" id="policy-note">(.*?)</p>', html, re.S).group(1)
    assert "no ground truth for this data" in note and "clm evaluate-policy" in note
    assert "policy-table" not in page.tables
    assert len(page.tables["budget"]) == 2  # the header and the unconstrained plan only
    assert "no --budget was given" in html and "(unconstrained)" in result.output


# ------------------------------------------------------------------------------------------------------
# Refusals


def test_missing_data_directory_is_named(report_world: ServedWorld, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = runner.invoke(
        app, ["report", "--data", str(missing), "--as-of", AS_OF, "--out", str(tmp_path / "r.html")]
    )
    assert result.exit_code == 2
    assert str(missing) in result.output
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("2025-13-01", "not a date"),
        ("2026-06-01", "after the end of the data"),
        ("2024-01-01", "first event"),
    ],
)
def test_bad_as_of_is_refused_naming_the_option(
    report_world: ServedWorld, tmp_path: Path, as_of: str, message: str
) -> None:
    out = tmp_path / "r.html"
    result = runner.invoke(
        app, ["report", "--data", str(report_world.data), "--as-of", as_of, "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "--as-of" in result.output and message in result.output
    assert not out.exists()


def test_output_must_be_html(report_world: ServedWorld, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["report", "--data", str(report_world.data), "--as-of", AS_OF, "--out", str(tmp_path / "r.pdf")]
    )
    assert result.exit_code == 2 and "--out" in result.output


def test_no_registered_models_exits_2_with_the_message(report_world: ServedWorld, tmp_path: Path) -> None:
    with mlflow_store(f"sqlite:///{tmp_path / 'empty.db'}"):
        result = runner.invoke(
            app,
            ["report", "--data", str(report_world.data), "--as-of", AS_OF, "--out", str(tmp_path / "r.html")],
        )
    assert result.exit_code == 2
    assert "no clm-churn model registered" in result.output and "clm train" in result.output


# ------------------------------------------------------------------------------------------------------
# In a browser


def test_report_opens_in_chromium_with_no_network(report: Report, tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-browser.sh to install Debian's chromium")
    from playwright.sync_api import sync_playwright

    off_page: list[str] = []
    errors: list[str] = []

    def guard(route) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:")):
            route.continue_()
        else:
            off_page.append(url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", guard)
            page.on(
                "console", lambda message: errors.append(message.text) if message.type == "error" else None
            )
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(report.path.as_uri(), wait_until="load")
            title = page.title()
            images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth)")
            svg_heights = page.eval_on_selector_all(
                "figure svg", "els => els.map(e => e.getBoundingClientRect().height)"
            )
            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert off_page == []
    assert errors == []
    assert title == f"clm campaign report — as of {AS_OF}"
    assert len(images) == 2 and all(width and width > 100 for width in images)
    assert len(svg_heights) >= 7 and all(h > 100 for h in svg_heights)
    assert screenshot.stat().st_size > 100_000


# ------------------------------------------------------------------------------------------------------
# The pure helpers


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (dt.date(2025, 9, 1), 1, dt.date(2025, 8, 1)),
        (dt.date(2025, 1, 15), 2, dt.date(2024, 11, 15)),
        (dt.date(2025, 3, 31), 1, dt.date(2025, 2, 28)),
        (dt.date(2024, 3, 31), 1, dt.date(2024, 2, 29)),
    ],
)
def test_months_before(day: dt.date, months: int, expected: dt.date) -> None:
    assert months_before(day, months) == expected


def test_stage_cutoffs_stay_inside_the_data() -> None:
    as_of = dt.date(2025, 9, 1)
    assert stage_cutoffs(as_of, dt.date(2025, 1, 1)) == [
        dt.date(2025, 6, 1), dt.date(2025, 7, 1), dt.date(2025, 8, 1), as_of
    ]  # fmt: skip
    assert stage_cutoffs(as_of, dt.date(2025, 7, 1)) == [dt.date(2025, 8, 1), as_of]
    assert stage_cutoffs(as_of, dt.date(2025, 8, 20)) == [as_of]


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (1234567, "int", "1,234,567"),
        (-12, "delta", "−12"),
        (12, "delta", "+12"),
        (1702.0, "money2", "1,702.00"),
        (4111.6, "money", "4,112"),
        (-1435.2, "money", "−1,435"),
        (-0.5, "ratio", "−0.50"),
        (-0.0001, "money", "0"),
        (0.1866, "pct", "18.7%"),
        (-0.0042, "pp", "−0.4 pp"),
        (float("nan"), "money", "–"),
        (None, "int", "–"),
        ("at_risk", "text", "at_risk"),
    ],
)
def test_format_value(value: object, kind: str, text: str) -> None:
    assert format_value(value, kind) == text


def test_inline_svg_has_no_url_and_scopes_its_ids() -> None:
    markup = figure_svg(score_distribution_figure({"churn": np.linspace(0, 1, 50)}), "scores")
    assert markup.startswith("<svg") and "http" not in markup and "<metadata" not in markup
    ids = re.findall(r'\bid="([^"]+)"', markup)
    assert ids and all(i.startswith("scores-") for i in ids)
    for reference in re.findall(r"(?:url\(|href=\")#([^)\"]+)", markup):
        assert reference in ids


def test_drift_section_equals_clm_monitor_and_warns_of_its_breaches(report: Report) -> None:
    """The report's drift tables are `clm monitor`'s numbers for the same date, and every breach is listed in
    the warning box."""
    result = runner.invoke(
        app,
        ["monitor", "--data", str(report.world.data), "--as-of", AS_OF, "--json", "--decision-log", "none"],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    monitored = json.loads(result.stdout)
    features = {row["feature"]: row for row in monitored["features"]}
    _, rows = report.page.table("drift-features")
    assert set(rows) == set(features) and len(features) > 40
    for name, row in rows.items():
        expected = features[name]["psi"]
        if expected is None:
            assert row[2][1] in (None, "", "nan")
        else:
            assert float(row[2][1]) == pytest.approx(expected, rel=1e-9), name
        assert (row[7][0] != "–") == features[name]["breach"], name
    html = report.html
    if monitored["breaches"]:
        box = html.split('id="drift-breaches" role="alert"', 1)[1].split("</div>", 1)[0]
        assert box.count("<li>") == len(monitored["breaches"])
    else:
        assert 'id="drift-breaches">No drift breach.' in html


def test_lifecycle_section_by_an_independent_computation(report: Report, independent: pd.DataFrame) -> None:
    _, quadrants = report.page.table("value-quadrants")
    assert sum(number(row[1]) for row in quadrants.values()) == len(independent)
    assert sum(float(row[2][1]) for row in quadrants.values()) == pytest.approx(1.0)
    value = independent["value_if_retained"].to_numpy(dtype=float)
    best = independent["best_offered_value"].to_numpy(dtype=float)
    underserved = (value >= np.nanquantile(value, 0.8)) & (np.isnan(best) | (best <= 0))
    summary = re.search(r'id="underserved-summary">([\d,]+) underserved users', report.html).group(1)
    assert int(summary.replace(",", "")) == int(underserved.sum())
    _, conversion = report.page.table("stage-conversion")
    assert conversion  # one row per stage with a next stage, per step between the monthly cutoffs
