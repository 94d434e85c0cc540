"""The reviewer pages' words: both languages have every key, codes from the data read in Chinese on a Chinese
page (`term`), the drift monitor's sentences too (`monitor_text`), the pages' number and money filters never
write −0.00, and a replay's candidates take the re-run's reasons (the reader's language)."""

from __future__ import annotations

import re

import pytest

from models.arbitration import STATUSES
from models.catalog import NO_ACTION, action_label
from serving.review.caches import fmt_value
from serving.review.pages import TEMPLATES
from serving.review.replay import in_language
from serving.review.text import TERMS_ZH, TEXT, monitor_text, term
from serving.scorer import Decided


def test_both_languages_have_every_word_and_chinese_says_it_in_chinese() -> None:
    assert TEXT["en"].keys() == TEXT["zh"].keys()
    latin = re.compile(r"(?<![\w{])[a-z]{3,}(?![\w}])")  # a lower-case English word, not a {placeholder}
    allowed = {"review"}  # the scope's name, as the key carries it
    for key, said in TEXT["zh"].items():
        assert not set(latin.findall(said)) - allowed, (key, said)


@pytest.mark.parametrize(
    "code", [*STATUSES, "chosen", "low", "medium", "high", "model", "prior", "definition"]
)
def test_every_status_band_and_source_has_a_chinese_word(code: str) -> None:
    assert code in TERMS_ZH and term(code, "zh") == TERMS_ZH[code] and term(code, "en") == code


def test_terms_translate_each_part_and_keep_what_they_do_not_know() -> None:
    assert term("high value · short lifecycle", "zh") == "高价值 · 短生命周期"
    assert term("purchase", "zh") == "购买"  # event types, as the feature registry says them
    assert term("some_new_code", "zh") == "some_new_code" and term(None, "zh") == ""
    assert term("the session has expired; sign in again", "zh") == "会话已过期；请重新登录"
    assert (
        action_label(NO_ACTION, "zh") == "不干预"
        and action_label("retention_discount") == "retention_discount"
    )


@pytest.mark.parametrize(
    ("english", "chinese"),
    [
        ("training cutoffs of clm-churn/3: 2025-03-01 … 2025-09-01 (7 cutoffs), 31,200 rows",
         "clm-churn/3 的训练截止日期 2025-03-01 … 2025-09-01 （7 个截止日期）, 31,200 行"),
        ("feature gap_ratio: PSI 0.300 ≥ 0.25 (ks p = 1e-05); missing rate 1.0% → 5.0%",
         "特征 gap_ratio：PSI 0.300 ≥ 0.25 （KS p = 1e-05）；缺失率 1.0% → 5.0%"),
        ("feature last_action: PSI 1.247 ≥ 0.2 (chi-square p = 6.5e-75)", "特征 last_action：PSI 1.247 ≥ 0.2 （卡方 p = 6.5e-75）"),
        ("stage at_risk: share 10.0% → 20.0%", "阶段 衰退期：占比 10.0% → 20.0%"),
        ("lift winback_offer: predicted +0.010 outside the measured [-0.100, +0.002] (45 users)",
         "提升 召回优惠：预测 +0.010 超出实测区间 [-0.100, +0.002]（45 位用户）"),
        ("no logged decision has an outcome (retained / churned) yet", "尚无已记录结果（留存 / 流失）的决策"),
    ],
)  # fmt: skip
def test_the_monitors_sentences_in_chinese(english: str, chinese: str) -> None:
    assert monitor_text(english, "zh") == chinese
    assert monitor_text(english, "en") == english


def test_numbers_and_money_on_the_pages_never_read_minus_zero() -> None:
    filters = TEMPLATES.env.filters
    assert (
        filters["num"](-0.0001, 2) == "0.00"
        and filters["num"](-0.0) == "0.00"
        and filters["num"](-1.5, 1) == "-1.5"
    )
    assert filters["pct"](-0.00001) == "0.0%"
    page = TEMPLATES.env.from_string("{{ a|money }} · {{ b|money(0) }} · {{ c|money(2, true) }}")
    assert (
        page.render(a=-0.004, b=1234.6, c=2.0, currency="EUR", lang="en")
        == "0.00 EUR · 1,235 EUR · +2.00 EUR"
    )
    with pytest.raises(KeyError):  # a page that shows money must be told its currency
        TEMPLATES.env.from_string("{{ a|money }}").render(a=1.0, lang="en")
    assert (
        fmt_value(-0.001) == "0"
        and fmt_value(None, "zh") == "缺失"
        and fmt_value(5.3, "en", "USD") == "5.30 USD"
    )


def test_a_replays_candidates_take_the_re_runs_reasons() -> None:
    logged = [{"name": "a", "reason": "当前阶段（流失期）不提供此动作", "expected_value": 1.0},
              {"name": "gone", "reason": "kept", "expected_value": 0.0}]  # fmt: skip
    again = Decided(None, {}, [{"name": "a", "reason": "not offered at stage dormant"}], 1.0, False)  # type: ignore[arg-type]
    assert in_language(logged, again) == [
        {"name": "a", "reason": "not offered at stage dormant", "expected_value": 1.0},
        {"name": "gone", "reason": "kept", "expected_value": 0.0},
    ]
    assert in_language(logged, None) == logged
