"""Process settings: one typed object, read from `CLM_*` environment variables and an optional `clm.toml`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Where things live and which components run; business parameters live in the config file instead."""

    model_config = SettingsConfigDict(env_prefix="CLM_", toml_file="clm.toml", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Local data directory (generated data, stores).")
    config: Path | None = Field(None, description="A business config TOML merged over the shipped defaults.")
    timezone: str = Field("UTC", description="Time zone given to naive timestamps at ingest.")
    online_store: str | None = Field(None, description="sqlite:///PATH or redis://HOST:PORT/DB.")
    skip_services: bool = Field(False, description="Skip tests that need PostgreSQL/Redis (laptops only).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))
