"""The command line's surface, settings and the business config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clm.cli import app
from clm.config import ConfigError, config_digest, default_config, load_config
from clm.settings import Settings

runner = CliRunner()


def test_help_lists_every_command_with_a_description() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in app.registered_commands:
        assert command.name in result.output
        assert command.help and len(command.help.splitlines()) == 1


def test_simulate_command_writes_the_data_directory_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "w"
    result = runner.invoke(
        app, ["simulate", "--users", "300", "--days", "100", "--seed", "1", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["users"] == 300 and summary["truth_cutoffs"] == ["2025-04-01"]  # after the first 60 days
    assert {p.name for p in out.iterdir()} == {
        "events.parquet", "users.parquet", "subscriptions.parquet", "campaigns.parquet", "truth"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--truth-cutoffs", "monthly:2025-03-01"], "FIRST..LAST"),
        (["--truth-cutoffs", "2026-06-01"], "outside the simulated period"),
        (["--start", "yesterday"], "not a date"),
    ],
)
def test_simulate_refuses_bad_options_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["simulate", "--users", "50", "--days", "100", "--out", str(tmp_path / "w"), *args]
    )
    assert result.exit_code == 2
    assert message in result.output + (result.stderr or "")
    assert not (tmp_path / "w").exists()


def test_user_config_overrides_defaults_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("[labels]\nhorizon_days = 60\n")
    merged = load_config(path)
    assert merged.labels.horizon_days == 60
    assert merged.labels.churn_definition == default_config()["labels"]["churn_definition"]
    assert config_digest(merged) != config_digest(load_config())


@pytest.mark.parametrize(
    ("text", "message"), [("[labels\n", "not valid TOML"), ("labels = 3\n", "expected a table")]
)
def test_bad_config_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_settings_read_clm_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLM_TIMEZONE", "Asia/Shanghai")
    monkeypatch.setenv("CLM_ONLINE_STORE", "redis://127.0.0.1:6379/0")
    settings = Settings()
    assert settings.timezone == "Asia/Shanghai"
    assert settings.online_store == "redis://127.0.0.1:6379/0"


def test_a_config_typo_stops_a_command_with_the_key_and_its_nearest_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLM_CONFIG", raising=False)
    (tmp_path / "events.csv").write_text("user_id,ts,event_type,amount\nu1,2024-01-01,login,0\n")
    (tmp_path / "typo.toml").write_text('[ingest]\ntimezon = "Asia/Tokyo"\n')
    result = runner.invoke(
        app, ["ingest", "--events", "events.csv", "--config", "typo.toml", "--out", str(tmp_path / "d")]
    )
    assert result.exit_code == 2
    assert "'ingest.timezon' is not known; did you mean 'ingest.timezone'?" in result.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--data", "data"],
        ["score", "--data", "data", "--as-of", "2025-06-01", "--out", "out.csv"],
        ["features", "build", "--data", "data", "--cutoffs", "2025-06-01", "--out", "features"],
        ["evaluate-policy", "--data", "data"],
    ],
)
def test_every_command_stops_on_a_config_typo_without_a_traceback(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.toml").write_text("[labels]\nhorizon_dayz = 30\n")
    monkeypatch.setenv("CLM_CONFIG", str(tmp_path / "typo.toml"))
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "'labels.horizon_dayz' is not known; did you mean 'labels.horizon_days'?" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_settings_read_clm_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLM_DATA_DIR", raising=False)
    monkeypatch.delenv("CLM_TIMEZONE", raising=False)
    (tmp_path / "clm.toml").write_text('data_dir = "elsewhere"\ntimezone = "Europe/Berlin"\n')
    monkeypatch.setenv("CLM_TIMEZONE", "Asia/Shanghai")
    settings = Settings()
    assert settings.data_dir == Path("elsewhere")
    assert settings.timezone == "Asia/Shanghai"  # the environment beats the file
