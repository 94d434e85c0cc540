"""The API's process settings: one typed object read from `CLM_*` environment variables. Business parameters
(bands, top-k, the feature windows) come from the versioned config instead."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SCOPES = ("score", "review", "admin")


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLM_", extra="ignore")

    api_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description='JSON object: API key → scopes, e.g. {"k1": ["score"], "k2": ["score", "admin"]}. '
        "With none configured every protected route answers 401.",
    )
    online_store: str | None = Field(None, description="sqlite:///PATH or redis://HOST:PORT/DB?prefix=NAME.")
    data_dir: str = Field("data", description="Where the default SQLite files live.")
    events_dir: str | None = Field(
        None,
        description="The canonical data directory (events.parquet, …) the reviewer pages read for stage "
        "flows, calibration and each user's recent events; without it they show the store's snapshot only.",
    )
    decision_log: str | None = Field(
        None, description="sqlite:///PATH (default DATA/decisions.db) or postgresql://…"
    )
    decision_log_schema: str | None = Field(None, description="PostgreSQL schema of the decision log.")
    alias: str = Field("champion", description="Registry alias of the models and the policy that serve.")
    shadow_alias: str | None = Field(None, description="Score this alias beside the served one and log both.")
    reload_interval_seconds: float = Field(0.0, ge=0, description="Poll the aliases this often (0 = off).")
    max_batch: int = Field(1000, ge=1, description="Users or vectors per batch call.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Larger request bodies are refused (413).")
    exploration: bool = Field(True, description="Randomise the policy's configured share of decisions.")

    def store_url(self) -> str:
        return self.online_store or f"sqlite:///{self.data_dir}/online.db"

    def decision_log_url(self) -> str:
        return self.decision_log or f"sqlite:///{self.data_dir}/decisions.db"

    def scopes_of(self, key: str) -> frozenset[str] | None:
        """The scopes of an API key (constant-time comparison against every configured key), None if unknown."""
        import hmac

        found: frozenset[str] | None = None
        for known, scopes in self.api_keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = frozenset(scopes)
        return found
