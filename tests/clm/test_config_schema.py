"""The business config's schema: the shipped defaults fit it, a user's file is merged then validated, and
every mistake is one error naming the dotted key (and, for a typo, the nearest valid name)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from clm.config import ConfigError, config_digest, default_config, load_config, with_overrides
from clm.config_schema import ClmConfig, FeaturesSection
from models.catalog import OUTCOMES
from models.config import Outcome, Stage
from models.stages import STAGES


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_defaults_validate_and_come_back_unchanged() -> None:
    typed = load_config()
    assert isinstance(typed, ClmConfig)
    # same keys, same values and the same types (an int stays an int, a float a float)
    assert json.dumps(typed.as_dict(), sort_keys=True) == json.dumps(default_config(), sort_keys=True)
    assert list(typed.as_dict()["actions"]) == list(default_config()["actions"])  # catalog order kept


def test_typed_access_reads_the_same_values_as_the_dict(tmp_path: Path) -> None:
    typed = load_config(write(tmp_path, "[features]\nwindows_days = [14, 60]\n"))
    assert isinstance(typed.section("features"), FeaturesSection)
    assert typed.section("features").windows_days == [14, 60] == typed.features.windows_days
    assert typed.as_dict()["features"]["windows_days"] == [14, 60]
    assert typed.actions["winback_offer"].stages == ["dormant"]
    assert typed.features.as_dict() == typed.as_dict()["features"]
    assert "event_types" not in typed.ingest.as_dict()  # commented out in defaults.toml: stays absent
    with pytest.raises(KeyError, match="no section 'featurez'"):
        typed.section("featurez")


def test_a_user_override_merges_and_validates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[policy]\nlearner = "x"\nharm_tolerance = 0\n[models.churn.params]\nnum_leaves = 63\n'
        '[actions.birthday_gift]\nstages = ["mature"]\ncost = 1\nchannel = "email"\ncooldown_days = 365\n'
        'outcome = "retention"\nprior_delta_churn = -0.002\nprior_delta_upgrade = 0.0\n',
    )
    merged = load_config(path)
    assert merged.policy.learner == "x"
    assert merged.policy.harm_tolerance == 0.0 and isinstance(merged.policy.harm_tolerance, float)
    assert merged.policy.budget_method == "lagrangian"  # untouched keys keep the default
    assert merged.models.churn.params["num_leaves"] == 63
    assert merged.models.churn.params["learning_rate"] == 0.05
    assert list(merged.actions)[-1] == "birthday_gift"  # an open table takes new entries…
    assert merged.actions["birthday_gift"].cooldown_days == 365


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[labels]\nhorizon_dayz = 60\n", "config key 'labels.horizon_dayz' is not known; did you mean 'labels.horizon_days'?"),
        ("[actions.welcome_offer]\ncots = 1.0\n", "'actions.welcome_offer.cots' is not known; did you mean 'actions.welcome_offer.cost'?"),
        ("[models.churn]\nmonotonic = true\n", "'models.churn.monotonic' is not known; did you mean 'models.churn.monotone'?"),
        ("[[stages.rules]]\nstage = \"new\"\ndescription = \"\"\nwhen = \"tenure_days < 7\"\nsince = \"tenure_days\"\n",
         "'stages.rules[0].since' is not known; did you mean 'stages.rules[0].since_days'?"),
        ("[polcy]\nseed = 1\n", "config key 'polcy' is not known; did you mean 'policy'?"),
        ("[review]\nzzz = 1\n", "config key 'review.zzz' is not known; expected one of history_cutoffs, "),
    ],
)  # fmt: skip
def test_a_typo_names_the_key_and_its_nearest_valid_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[labels]\nhorizon_days = "thirty"\n', "config key 'labels.horizon_days': expected a valid integer, got 'thirty'"),
        ('[labels]\nhorizon_days = "30"\n', "config key 'labels.horizon_days': expected a valid integer, got '30'"),
        ("[labels]\nhorizon_days = 0\n", "config key 'labels.horizon_days': expected greater than 0, got 0"),
        ("[features]\nwindows_days = [7, -30]\n", "config key 'features.windows_days[1]': expected greater than 0, got -30"),
        ("[policy]\nexploration_share = 1.5\n", "config key 'policy.exploration_share': expected less than 1, got 1.5"),
        ('[policy]\nlearner = "s"\n', "config key 'policy.learner': expected 't' or 'x', got 's'"),
        ('[labels]\nchurn_definition = "contract"\n', "config key 'labels.churn_definition': expected 'auto', 'contractual' or 'non_contractual'"),
        ("[value]\nmargin_share = 1.2\n", "config key 'value.margin_share': expected less than or equal to 1, got 1.2"),
        ('[actions.winback_offer]\nstages = ["sleeping"]\n', "config key 'actions.winback_offer.stages[0]': expected 'new', "),
        ('[actions.new_one]\nstages = ["new"]\n', "config key 'actions.new_one.cost' is missing"),
        ("[serving]\nchurn_band_thresholds = [0.5, 0.1]\n", "'serving.churn_band_thresholds': the low/medium threshold"),
        ('[ingest]\ntimezone = "Mars/Olympus"\n', "'ingest.timezone': unknown time zone 'Mars/Olympus'"),
        ('[value.plan_prices]\npro = "39"\n', "config key 'value.plan_prices.pro': expected a valid number, got '39'"),
        ('[features]\nplan_order = ["free", "basic", "pro", "team"]\n', "no price for the plan(s) ['team']"),
        ('[actions.no_action]\nstages = ["new"]\ncost = 0\nchannel = "x"\ncooldown_days = 1\noutcome = "retention"\n'
         "prior_delta_churn = 0.0\nprior_delta_upgrade = 0.0\n", "actions.no_action is reserved"),
        ("[labels]\nkeep_churned_users = 1\n", "config key 'labels.keep_churned_users': expected a valid boolean, got 1"),
        ("[policy]\ncontact_windows_days = [30, 0]\n", "config key 'policy.contact_windows_days[1]': expected greater than 0"),
        ("[policy]\nnegative_outcomes_upgrade = -1\n", "'policy.negative_outcomes_upgrade': expected greater than or equal to 0"),
        ("[policy]\nnegative_outcome_days = 0\n", "config key 'policy.negative_outcome_days': expected greater than 0"),
        ("[actions.upgrade_offer]\nmax_contacts = 2\n", "max_contacts and max_contacts_window_days go together"),
        ("[policy]\nsuppress_after_negative_outcomes = 2\n", "'policy.suppress_after_negative_outcomes' is not known"),
    ],
)  # fmt: skip
def test_a_wrong_value_names_the_key_the_expected_type_and_the_value(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert message in str(raised.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, '[labels]\nhorizon_dayz = 1\n[policy]\nlearner = "s"\n'))
    assert len(str(raised.value).splitlines()) == 2


def test_the_schema_knows_the_stages_and_outcomes_the_models_know() -> None:
    assert typing.get_args(Stage) == STAGES
    assert typing.get_args(Outcome) == OUTCOMES


def test_with_overrides_changes_only_the_given_keys_and_validates_again() -> None:
    shipped = load_config()
    changed = with_overrides(
        shipped, {"policy": {"exploration_share": 0.0}, "ingest": {"event_types": ["login"]}}
    )
    assert changed.policy.exploration_share == 0.0 and shipped.policy.exploration_share == 0.05
    assert changed.ingest.event_types == ["login"] and shipped.ingest.event_types is None
    assert changed.policy.model_copy(update={"exploration_share": 0.05}) == shipped.policy
    assert config_digest(changed) != config_digest(shipped) == config_digest(load_config())
    assert "event_types" not in with_overrides(changed, {"ingest": {"event_types": None}}).ingest.as_dict()
    with pytest.raises(ConfigError, match=r"'policy\.exploration_share': expected less than 1, got 1\.0"):
        with_overrides(shipped, {"policy": {"exploration_share": 1.0}})
    with pytest.raises(ConfigError, match=r"did you mean 'policy\.exploration_share'"):
        with_overrides(shipped, {"policy": {"exploration_shares": 0.0}})


def test_the_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(ValueError, match="frozen"):
        config.policy.exploration_share = 0.5  # type: ignore[misc]
