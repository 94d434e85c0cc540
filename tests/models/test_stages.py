"""Lifecycle stage rules: the shipped defaults on hand-built users, precedence, config validation and the
agreement report."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest

from clm.config import ConfigError, load_config, with_overrides
from features.registry import FeatureParams, build_registry, feature_names
from models.config import StageRuleSection
from models.rules import RuleError
from models.stages import (
    SCORE_NAMES,
    STAGE_NAMES_ZH,
    STAGES,
    StageRules,
    assign_stages,
    stage_agreement,
    stage_label,
)

CONFIG = load_config()
FEATURES = feature_names(build_registry(FeatureParams.from_config(CONFIG.features)))
DEFAULTS = StageRules.from_config(CONFIG.stages, FEATURES)
NAN = math.nan

# A steady long-time user; each case changes what makes it that case.
STEADY = {
    "days_since_last_event": 2.0, "tenure_days": 200.0, "active_days_30d": 6.0, "active_days_90d": 18.0,
    "gap_ratio": 0.5, "subscription_periods": 1.0, "mrr": 12.0, "churn_probability": 0.03,
}  # fmt: skip


def user(**changes: float) -> dict[str, float]:
    """One feature row: every registry feature and score missing except the steady user's and `changes`."""
    row = dict.fromkeys([*FEATURES, *SCORE_NAMES], NAN)
    return {**row, **STEADY, **changes}


def default_rule(stage: str) -> StageRuleSection:
    (rule,) = [r for r in CONFIG.stages.rules if r.stage == stage]
    return rule


CASES = [
    ("60 silent days", user(days_since_last_event=60, active_days_30d=0, active_days_90d=2), "dormant", 60.0),
    ("cancelled yesterday", user(days_since_last_event=1, mrr=0), "dormant", 1.0),
    (
        "4x overdue for 3 weeks",
        user(days_since_last_event=21, gap_ratio=5, active_days_30d=1),
        "dormant",
        21.0,
    ),
    (
        "3 days tenure",
        user(tenure_days=3, days_since_last_event=1, active_days_30d=2, active_days_90d=2),
        "new",
        3.0,
    ),
    ("back after a long silence", user(active_days_30d=2, active_days_90d=2), "reactivated", NAN),
    ("high churn score", user(churn_probability=0.6), "at_risk", NAN),
    ("long tenure, steady use", user(), "mature", NAN),
    ("long tenure, churn score missing", user(churn_probability=NAN), "mature", NAN),
    ("past onboarding, not yet long", user(tenure_days=40, active_days_90d=9), "growing", NAN),
    ("long tenure, rare use", user(active_days_30d=1, active_days_90d=2), "growing", NAN),
    ("nothing known", dict.fromkeys([*FEATURES, *SCORE_NAMES], NAN), "growing", NAN),
]


@pytest.mark.parametrize(("case", "row", "stage", "since_days"), CASES, ids=[c[0] for c in CASES])
def test_default_rules_one_row(case: str, row: dict, stage: str, since_days: float) -> None:
    assignment = assign_stages(row, DEFAULTS)
    assert assignment.stage.tolist() == [stage]
    if assignment.rule_index[0] == -1:
        expected_text = f"{stage}: {CONFIG.stages.default_description} (no other rule matched)"
    else:
        rule = default_rule(stage)
        expected_text = f"{stage}: {rule.description} ({rule.when})"
    assert assignment.rule.tolist() == [expected_text]
    np.testing.assert_array_equal(assignment.since_days, [since_days])


def test_default_rules_vectorised_agree_with_one_row_at_a_time() -> None:
    frame = pd.DataFrame([row for _, row, _, _ in CASES])
    assignment = assign_stages(frame, DEFAULTS)
    assert assignment.stage.tolist() == [stage for _, _, stage, _ in CASES]
    np.testing.assert_array_equal(assignment.since_days, [since for *_, since in CASES])
    assert assignment.rule_index.dtype.kind == "i"
    assert assignment.stage.dtype == object and assignment.rule.dtype == object


def test_default_rules_read_registry_features_and_scores() -> None:
    assert DEFAULTS.names <= set(FEATURES) | set(SCORE_NAMES)
    assert {"days_since_last_event", "tenure_days", "churn_probability"} <= DEFAULTS.names
    assert DEFAULTS.default_stage == "growing"


def custom_rules(*rules: dict[str, str], default_stage: str = "growing") -> StageRules:
    section = {"default_stage": default_stage, "default_description": "otherwise", "rules": list(rules)}
    return StageRules.from_config(with_overrides(CONFIG, {"stages": section}).stages, FEATURES)


SILENT = {"stage": "dormant", "description": "silent", "when": "days_since_last_event >= 30",
          "since_days": "days_since_last_event - 40"}  # fmt: skip
YOUNG = {"stage": "new", "description": "young", "when": "tenure_days < 30", "since_days": "tenure_days"}


def test_precedence_is_the_order_of_the_rules() -> None:
    # the first row matches both rules, the second neither (so not every row is decided by the first rule)
    rows = {"days_since_last_event": [45.0, 1.0], "tenure_days": [20.0, 100.0]}
    assert assign_stages(rows, custom_rules(SILENT, YOUNG)).stage.tolist() == ["dormant", "growing"]
    swapped = assign_stages(rows, custom_rules(YOUNG, SILENT))
    assert swapped.stage.tolist() == ["new", "growing"]
    assert swapped.rule_index.tolist() == [0, -1]
    # the same with the default rules: silent for 60 days and only 10 days a customer
    frame = pd.DataFrame(
        [user(days_since_last_event=60, tenure_days=10), user(tenure_days=40, active_days_90d=9)]
    )
    assert assign_stages(frame, DEFAULTS).stage.tolist() == ["dormant", "growing"]


def test_since_days_is_clipped_at_zero_and_nan_without_an_expression() -> None:
    rules = custom_rules(
        SILENT, YOUNG, {"stage": "mature", "description": "old", "when": "tenure_days >= 90"}
    )
    columns = {"days_since_last_event": [35.0, 50.0, 1.0, 1.0], "tenure_days": [100.0, 100.0, 10.0, 100.0]}
    assignment = assign_stages(columns, rules)
    assert assignment.stage.tolist() == ["dormant", "dormant", "new", "mature"]
    np.testing.assert_array_equal(assignment.since_days, [0.0, 10.0, 10.0, NAN])
    assert assignment.rule.tolist()[0] == "dormant: silent (days_since_last_event >= 30)"
    assert assignment.rule.tolist()[3] == "mature: old (tenure_days >= 90)"


def test_an_empty_frame_gets_empty_arrays() -> None:
    assignment = assign_stages(
        pd.DataFrame({name: pd.Series(dtype=float) for name in DEFAULTS.names}), DEFAULTS
    )
    assert len(assignment.stage) == len(assignment.since_days) == 0


def test_a_rule_that_reads_no_feature_applies_to_every_row() -> None:
    rules = custom_rules({"stage": "mature", "description": "all", "when": "true", "since_days": "7"})
    assignment = assign_stages(pd.DataFrame({"tenure_days": [1.0, 2.0, 3.0]}), rules)
    assert assignment.stage.tolist() == ["mature"] * 3
    assert assignment.since_days.tolist() == [7.0] * 3


def test_scalar_inputs_are_spread_over_the_rows() -> None:
    columns = {"days_since_last_event": np.array([45.0, 1.0]), "tenure_days": 20.0}
    young_and_silent = {**YOUNG, "when": "tenure_days < 30 and days_since_last_event >= 30"}
    assert assign_stages(columns, custom_rules(young_and_silent)).stage.tolist() == ["new", "growing"]
    assert assign_stages(columns, custom_rules(SILENT, YOUNG)).since_days.tolist() == [5.0, 20.0]


def test_missing_input_column_is_named() -> None:
    with pytest.raises(RuleError, match="stage rules read 'tenure_days', which the input does not have"):
        assign_stages({"days_since_last_event": [1.0]}, custom_rules(SILENT, YOUNG))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stage": "sleeping"}, "config key 'stages.rules[1].stage': expected 'new', "),
        ({"when": "tenure_dayz < 30"}, "stages.rules[1] (new): rule 'tenure_dayz < 30': unknown name 'tenure_dayz' "
                                       "(did you mean 'tenure_days'?)"),
        ({"when": "tenure_days < "}, "stages.rules[1] (new): rule 'tenure_days < ': invalid syntax"),
        ({"when": "tenure_days.real < 30"}, "stages.rules[1] (new): rule 'tenure_days.real < 30': attribute access"),
        ({"when": "tenure_days * 2"}, "stages.rules[1] (new): `when` must be a condition"),
        ({"since_days": "tenure_days > 2"}, "stages.rules[1] (new): `since_days` must be a number of days"),
        ({"since": "tenure_days"}, "config key 'stages.rules[1].since' is not known; did you mean 'stages.rules[1].since_days'?"),
    ],
)  # fmt: skip
def test_from_config_rejects(change: dict, message: str) -> None:
    with pytest.raises(
        ValueError
    ) as raised:  # a RuleError from the compiler or a ConfigError from the schema
        custom_rules(SILENT, {**YOUNG, **change})
    assert message in str(raised.value)


def test_from_config_rejects_a_missing_when_and_an_unknown_default() -> None:
    with pytest.raises(ConfigError, match=r"'stages\.rules\[0\]\.when' is missing"):
        custom_rules({"stage": "new", "description": "no condition"})
    with pytest.raises(ConfigError, match=r"'stages\.default_stage': expected .*got 'idle'"):
        custom_rules(SILENT, default_stage="idle")


def test_names_are_the_features_and_scores_read_by_when_and_since_days() -> None:
    rules = custom_rules(
        {
            "stage": "at_risk",
            "description": "r",
            "when": "churn_probability >= 0.5",
            "since_days": "tenure_days",
        }
    )
    assert rules.names == {"churn_probability", "tenure_days"}


def test_stage_agreement_on_a_hand_computed_example() -> None:
    actual = ["new", "new", "growing", "dormant", "dormant", "dormant"]
    predicted = ["new", "growing", "growing", "dormant", "dormant", "new"]
    report = stage_agreement(predicted, actual)
    # new: P 1/2, R 1/2 -> 0.5; growing: P 1/2, R 1 -> 2/3; dormant: P 1, R 2/3 -> 0.8
    assert report["f1"] == pytest.approx({"new": 0.5, "growing": 2 / 3, "dormant": 0.8})
    assert report["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert report["accuracy"] == pytest.approx(4 / 6)
    confusion = report["confusion"]
    assert list(confusion.index) == list(confusion.columns) == list(STAGES)
    assert confusion.loc["new", "growing"] == 1 and confusion.loc["dormant", "new"] == 1
    assert confusion.loc["dormant", "dormant"] == 2 and confusion.to_numpy().sum() == 6


def test_stage_agreement_rejects_unknown_stages_and_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="unknown stages"):
        stage_agreement(["new"], ["asleep"])
    with pytest.raises(ValueError, match="equally long"):
        stage_agreement(["new", "new"], ["new"])


def test_stage_rules_pickle() -> None:
    copy = pickle.loads(pickle.dumps(DEFAULTS))
    row = user(days_since_last_event=60)
    assert assign_stages(row, copy).rule.tolist() == assign_stages(row, DEFAULTS).rule.tolist()


def test_a_rule_reads_in_chinese_with_the_stages_chinese_name_and_its_description_zh() -> None:
    rules = DEFAULTS
    for index, rule in enumerate(rules.rules):
        assert rule.description_zh, rule.stage  # the shipped config describes every rule in Chinese
        chinese = rules.text_at(index, "zh")
        assert chinese == f"{STAGE_NAMES_ZH[rule.stage]}：{rule.description_zh}（{rule.when.text}）"
        assert (
            rules.text_at(index, "en")
            == rule.text()
            == f"{rule.stage}: {rule.description} ({rule.when.text})"
        )
        assert rules.parts_of(chinese, "zh") == (
            STAGE_NAMES_ZH[rule.stage],
            rule.description_zh,
            rule.when.text,
        )
        assert rules.same_rule(rule.text(), chinese) and rules.index_of(chinese) == index
    assert (
        rules.text_at(-1, "zh")
        == f"{STAGE_NAMES_ZH['growing']}：{rules.default_description_zh}（没有其他规则匹配）"
    )
    assert not rules.same_rule(rules.text_at(0, "en"), rules.text_at(1, "zh"))
    assert rules.parts_of("not a rule") is None and rules.index_of("not a rule") is None
    assert set(STAGE_NAMES_ZH) == set(STAGES) and stage_label("at_risk", "zh") == "衰退期"
    assert stage_label("at_risk") == "at_risk"


def test_a_policy_without_chinese_descriptions_reads_the_english_ones() -> None:
    config = load_config()
    section = config.stages.model_copy(
        update={"rules": [r.model_copy(update={"description_zh": ""}) for r in config.stages.rules],
                "default_description_zh": ""}
    )  # fmt: skip
    rules = StageRules.from_config(section, feature_names(build_registry()))
    assert rules.text_at(0, "zh") == f"流失期：{rules.rules[0].description}（{rules.rules[0].when.text}）"
    assert rules.text_at(-1, "zh").startswith(f"成长期：{config.stages.default_description}")
