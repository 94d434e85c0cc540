"""One settings hierarchy: the API's `ServingSettings` and the CLI's `Settings` read the same `CLM_*`
variables and the same `clm.toml`, with the same types; a variable beats the file, the file beats the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from clm.settings import Settings
from serving.settings import ProcessSettings, ServingSettings

SHARED = ("CLM_DATA_DIR", "CLM_CONFIG", "CLM_ONLINE_STORE", "CLM_DECISION_LOG", "CLM_API_KEYS", "CLM_ALIAS")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of our own, with none of the developer's CLM_* variables."""
    monkeypatch.chdir(tmp_path)
    for name in SHARED:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_both_settings_share_one_base_with_the_same_field_types() -> None:
    assert issubclass(Settings, ProcessSettings) and issubclass(ServingSettings, ProcessSettings)
    for name in ProcessSettings.model_fields:
        assert Settings.model_fields[name].annotation == ServingSettings.model_fields[name].annotation
    assert ServingSettings.model_fields["data_dir"].annotation is Path


def test_defaults_without_a_file_or_variables(workdir: Path) -> None:
    settings = ServingSettings()
    assert settings.data_dir == Path("data")
    assert settings.store_url() == "sqlite:///data/online.db"
    assert settings.decision_log_url() == "sqlite:///data/decisions.db"
    assert settings.alias == "champion" and settings.api_keys == {}


def test_clm_toml_is_read_by_the_server_as_by_the_cli(workdir: Path) -> None:
    (workdir / "clm.toml").write_text(
        'data_dir = "/srv/clm"\nonline_store = "redis://127.0.0.1:6379/3"\nalias = "challenger"\n'
        'timezone = "Asia/Tokyo"\n[api_keys]\nk1 = ["score"]\n'
    )
    serving = ServingSettings()
    assert serving.store_url() == "redis://127.0.0.1:6379/3"
    assert serving.data_dir == Path("/srv/clm")
    assert serving.decision_log_url() == "sqlite:////srv/clm/decisions.db"
    assert serving.alias == "challenger"
    assert serving.scopes_of("k1") == frozenset({"score"}) and serving.scopes_of("k2") is None
    cli = Settings()
    assert cli.online_store == serving.online_store and cli.data_dir == serving.data_dir
    assert cli.timezone == "Asia/Tokyo"


def test_an_environment_variable_beats_clm_toml(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "clm.toml").write_text('online_store = "redis://127.0.0.1:6379/3"\ndata_dir = "/srv/clm"\n')
    monkeypatch.setenv("CLM_ONLINE_STORE", "sqlite:///elsewhere.db")
    monkeypatch.setenv("CLM_API_KEYS", '{"k2-admin-key": ["score", "admin"]}')
    for settings in (ServingSettings(), Settings()):
        assert settings.store_url() == "sqlite:///elsewhere.db"
        assert settings.data_dir == Path("/srv/clm")  # not overridden: still from the file
    assert ServingSettings().scopes_of("k2-admin-key") == frozenset({"score", "admin"})
