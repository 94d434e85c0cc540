"""Lifecycle stages (DESIGN.md §1): ordered rules over features and scores, first match wins, and every
assignment says which rule fired and, where the features can tell, how long ago the user entered it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from models.config import StageRuleSection, StagesSection
from models.rules import Expression, RuleError, as_column, compile_expression, input_length, is_scalar

STAGES: tuple[str, ...] = ("new", "growing", "mature", "at_risk", "dormant", "reactivated")
LANGUAGES: tuple[str, ...] = ("en", "zh")  # the languages of a decision's texts
# How the stages read in Chinese (DESIGN.md §1); a stage is shown by its identifier in English.
STAGE_NAMES_ZH: dict[str, str] = {
    "new": "激活期", "growing": "成长期", "mature": "成熟期", "at_risk": "衰退期", "dormant": "流失期",
    "reactivated": "回流期",
}  # fmt: skip
SCORE_NAMES: tuple[str, ...] = ("churn_probability", "upgrade_probability")


def stage_label(stage: str, lang: str = "en") -> str:
    """A stage as a reader of `lang` sees it: its identifier in English, its Chinese name in Chinese."""
    return STAGE_NAMES_ZH.get(stage, stage) if lang == "zh" else stage


RuleParts = tuple[str, str, str]  # the stage as read in a language, the description, the condition


def rule_text(parts: RuleParts, lang: str = "en") -> str:
    """How a rule reads in a decision, e.g. "dormant: no activity for 30 days (days_since_last_event >= 30)"."""
    stage, description, condition = parts
    return (
        f"{stage}：{description}（{condition}）" if lang == "zh" else f"{stage}: {description} ({condition})"
    )


@dataclass(frozen=True)
class StageRule:
    stage: str
    description: str
    when: Expression
    since_days: Expression | None = None
    description_zh: str = ""

    def parts(self, lang: str = "en") -> RuleParts:
        """In Chinese the stage's Chinese name and `description_zh` (the English description when the policy
        has none); the condition is the expression in every language."""
        description = (self.description_zh or self.description) if lang == "zh" else self.description
        return stage_label(self.stage, lang), description, self.when.text

    def text(self, lang: str = "en") -> str:
        return rule_text(self.parts(lang), lang)


@dataclass(frozen=True)
class StageRules:
    rules: tuple[StageRule, ...]
    default_stage: str
    default_description: str
    default_description_zh: str = ""

    @classmethod
    def from_config(cls, section: StagesSection, feature_names: Collection[str]) -> StageRules:
        """The config's `[stages]` table (its shape checked by the schema), compiled: expressions over
        known features and scores."""
        allowed = frozenset(feature_names) | frozenset(SCORE_NAMES)
        return cls(
            rules=tuple(_rule_from_config(i, rule, allowed) for i, rule in enumerate(section.rules)),
            default_stage=section.default_stage,
            default_description=section.default_description,
            default_description_zh=section.default_description_zh,
        )

    @cached_property
    def names(self) -> frozenset[str]:
        """Every feature and score name the rules read."""
        out: set[str] = set()
        for rule in self.rules:
            out |= rule.when.names
            if rule.since_days is not None:
                out |= rule.since_days.names
        return frozenset(out)

    def parts_at(self, index: int, lang: str = "en") -> RuleParts:
        """The parts of rule `index` (-1: the default) in `lang`."""
        if index >= 0:
            return self.rules[index].parts(lang)
        if lang == "zh":
            description = self.default_description_zh or self.default_description
            return stage_label(self.default_stage, lang), description, "没有其他规则匹配"
        return self.default_stage, self.default_description, "no other rule matched"

    def default_text(self, lang: str = "en") -> str:
        return self.text_at(-1, lang)

    def text_at(self, index: int, lang: str = "en") -> str:
        """The text of rule `index` (-1: the default) in `lang`, as `StageAssignment.rule` has it in English."""
        return rule_text(self.parts_at(index, lang), lang)

    def index_of(self, text: str) -> int | None:
        """The index (-1: the default) of the rule whose text, in any language, is `text`; None if none is."""
        for index in (*range(len(self.rules)), -1):
            if any(self.text_at(index, lang) == text for lang in LANGUAGES):
                return index
        return None

    def same_rule(self, text: str, other: str) -> bool:
        """Whether two rule texts, each in any language, name the same rule."""
        return text == other or (
            self.index_of(text) is not None and self.index_of(text) == self.index_of(other)
        )

    def parts_of(self, text: str, lang: str = "en") -> RuleParts | None:
        """The parts of the rule whose text in `lang` is `text` (for a page that sets the condition apart as
        code); None when no rule reads so."""
        for index in (*range(len(self.rules)), -1):
            if self.text_at(index, lang) == text:
                return self.parts_at(index, lang)
        return None

    @cached_property
    def _stages_and_texts(self) -> tuple[np.ndarray, np.ndarray]:
        """Stage and rule text by rule index; index -1 (the last entry) is the default."""
        stages = np.array([rule.stage for rule in self.rules] + [self.default_stage], dtype=object)
        texts = np.array([rule.text() for rule in self.rules] + [self.default_text()], dtype=object)
        return stages, texts


def _rule_from_config(index: int, rule: StageRuleSection, allowed: frozenset[str]) -> StageRule:
    where = f"stages.rules[{index}] ({rule.stage})"
    try:
        when = compile_expression(rule.when, allowed)
        since_days = compile_expression(rule.since_days, allowed) if rule.since_days is not None else None
    except RuleError as exc:
        raise RuleError(f"{where}: {exc}") from None
    if when.kind != "condition":
        raise RuleError(f"{where}: `when` must be a condition, got the number {when.text!r}")
    if since_days is not None and since_days.kind != "number":
        raise RuleError(
            f"{where}: `since_days` must be a number of days, got the condition {since_days.text!r}"
        )
    return StageRule(rule.stage, rule.description, when, since_days, rule.description_zh)


@dataclass
class StageAssignment:
    """Per row: the stage, the fired rule's text, its index (-1 for the default) and the days since the
    user entered the stage (NaN when unknown)."""

    stage: np.ndarray
    rule: np.ndarray
    rule_index: np.ndarray
    since_days: np.ndarray


def assign_stages(columns: Mapping[str, Any] | pd.DataFrame, rules: StageRules) -> StageAssignment:
    """The first rule (in order) whose `when` holds, per row; the default stage where none does."""
    n = input_length(columns)
    env: dict[str, np.ndarray] = {}
    for name in rules.names:
        if name not in columns:
            raise RuleError(f"stage rules read {name!r}, which the input does not have")
        value = columns[name]
        # scalars are spread over the rows once here, so no rule has to work out the length again
        env[name] = np.full(n, value, dtype=as_column(value).dtype) if is_scalar(value) else as_column(value)
    rule_index = np.full(n, -1, dtype=np.int64)
    since_days = np.full(n, np.nan)
    undecided = np.ones(n, dtype=bool)
    for index, rule in enumerate(rules.rules):
        fired = _rows(rule.when.evaluate(env), n) & undecided
        if not fired.any():
            continue
        rule_index[fired] = index
        undecided &= ~fired
        if rule.since_days is not None:
            since_days[fired] = _rows(rule.since_days.evaluate(env), n)[fired]
        if not undecided.any():
            break
    stages, texts = rules._stages_and_texts
    return StageAssignment(
        stage=stages[rule_index],
        rule=texts[rule_index],
        rule_index=rule_index,
        since_days=np.maximum(since_days, 0.0),  # NaN stays NaN
    )


def _rows(values: np.ndarray, n: int) -> np.ndarray:
    """An expression's result over all n rows (one that reads no column yields a single value)."""
    return values if values.shape == (n,) else np.broadcast_to(values, (n,))


def stage_agreement(predicted: Sequence[str], actual: Sequence[str]) -> dict:
    """How well predicted stages match actual ones: the confusion matrix (rows actual, columns predicted),
    macro F1 over the stages present in `actual`, accuracy and F1 per such stage."""
    predicted = np.asarray(predicted, dtype=object)
    actual = np.asarray(actual, dtype=object)
    if predicted.shape != actual.shape or predicted.ndim != 1 or len(actual) == 0:
        raise ValueError(
            f"need two equally long, non-empty stage lists; got {predicted.shape} and {actual.shape}"
        )
    unknown = sorted(set(predicted) - set(STAGES) | set(actual) - set(STAGES), key=str)
    if unknown:
        raise ValueError(f"unknown stages {unknown}; expected {STAGES}")
    confusion = pd.DataFrame(
        confusion_matrix(actual, predicted, labels=list(STAGES)),
        index=pd.Index(STAGES, name="actual"),
        columns=pd.Index(STAGES, name="predicted"),
    )
    present = [stage for stage in STAGES if stage in set(actual)]
    per_stage = f1_score(actual, predicted, labels=present, average=None, zero_division=0.0)
    return {
        "confusion": confusion,
        "macro_f1": float(np.mean(per_stage)),
        "accuracy": float(np.mean(predicted == actual)),
        "f1": dict(zip(present, (float(v) for v in per_stage), strict=True)),
    }
