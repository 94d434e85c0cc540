"""Process settings, one hierarchy for the CLI and the API: `ProcessSettings` (where things live, read
from `CLM_*` environment variables, then `clm.toml` in the working directory, then the defaults) and
`ServingSettings`, the API's own keys on top. `clm.settings.Settings` extends the same base for the CLI.

The base lives here, not in clm/, because serving may not import clm (DESIGN.md §3) while clm may import
serving. Business parameters (bands, top-k, the feature windows) come from the versioned config instead."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SCOPES = ("score", "review", "admin")
SETTINGS_FILE = "clm.toml"


class ProcessSettings(BaseSettings):
    """What every clm process needs: precedence is explicit arguments, then `CLM_*` variables, then
    `clm.toml`, then these defaults (no .env file, no secrets directory)."""

    model_config = SettingsConfigDict(env_prefix="CLM_", toml_file=SETTINGS_FILE, extra="ignore")

    data_dir: Path = Field(Path("data"), description="Local data directory (generated data, stores).")
    config: Path | None = Field(None, description="A business config TOML merged over the shipped defaults.")
    online_store: str | None = Field(None, description="sqlite:///PATH or redis://HOST:PORT/DB?prefix=NAME.")

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

    def store_url(self) -> str:
        """The online store: CLM_ONLINE_STORE, else the SQLite file in the data directory."""
        return self.online_store or f"sqlite:///{self.data_dir}/online.db"


class ServingSettings(ProcessSettings):
    """The API's settings: the shared ones plus keys, the decision log, aliases and request limits."""

    api_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description='JSON object: API key → scopes, e.g. {"k1": ["score"], "k2": ["score", "admin"]}. '
        "With none configured every protected route answers 401.",
    )
    events_dir: str | None = Field(
        None,
        description="The canonical data directory (events.parquet, …) the reviewer pages read for stage "
        "flows, calibration and each user's recent events; without it they show the store's snapshot only.",
    )
    decision_log: str | None = Field(
        None, description="sqlite:///PATH (default DATA/decisions.db) or postgresql://…"
    )
    decision_log_schema: str | None = Field(None, description="PostgreSQL schema of the decision log.")
    decision_journal: Path | None = Field(
        None,
        description="Directory of the decision log's local journal: a decision is written there before it is "
        "answered and stored in the log by a background writer (default: DATA/decision-journal/<a digest of the "
        "log's URL and schema>, so each log drains only its own journal).",
    )
    journal_fsync_seconds: float = Field(
        1.0,
        gt=0,
        description="fsync the journal this often: what a power cut (not a killed process) can lose.",
    )
    alias: str = Field("champion", description="Registry alias of the models and the policy that serve.")
    shadow_alias: str | None = Field(None, description="Score this alias beside the served one and log both.")
    reload_interval_seconds: float = Field(0.0, ge=0, description="Poll the aliases this often (0 = off).")
    max_batch: int = Field(1000, ge=1, description="Users or vectors per batch call.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Larger request bodies are refused (413).")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="Close a connection whose request line and headers have not all arrived this "
        "long after it opened or its request began (slowloris)."
    )  # fmt: skip
    keep_alive_timeout_seconds: int = Field(
        5, ge=1, description="Close an idle keep-alive connection after this."
    )
    decision_log_statement_timeout_seconds: float = Field(
        5.0, gt=0, description="A decision-log write (decisions, outcomes) waiting longer (a locked table) "
        "fails: the request answers 503."
    )  # fmt: skip
    min_admin_key_length: int = Field(
        8, ge=1, description="An admin API key shorter than this refuses to start."
    )
    trial_load: bool = Field(
        True, description="Load every model artifact first in a throw-away process (a file that crashes "
        "LightGBM natively is refused, the server stays up)."
    )  # fmt: skip
    exploration: bool = Field(True, description="Randomise the policy's configured share of decisions.")
    run_dir: Path | None = Field(
        None,
        description="The directory the worker processes of one `clm serve` share (reload generation, each "
        "worker's versions); `clm serve` makes one. Without it a reload reaches only the worker that gets it.",
    )
    decision_cache_max_users: int = Field(
        100_000, ge=0,
        description="Decide every stored user in bulk when the snapshot holds at most this many; past it, an "
        "LRU of this many users filled on demand (0: no cache, every decision made in full).",
    )  # fmt: skip
    snapshot_check_seconds: float = Field(
        5.0, ge=0, description="Check the online store for a new snapshot this often (0 = off)."
    )
    session_secret: SecretStr | None = Field(
        None,
        description="Signs the reviewer pages' session cookies (at least 32 characters). Unset: `clm serve` "
        "generates one at start and shares it with its workers, so every session ends when it restarts.",
    )
    review_session_seconds: int = Field(
        8 * 3600, ge=60, description="A reviewer's sign-in lasts this long (the session cookie's expiry)."
    )

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (it signs the reviewer pages' sessions)")
        return secret

    @model_validator(mode="after")
    def _known_scopes_and_long_admin_keys(self) -> ServingSettings:
        """A key with an unknown scope (a typo like "scroe" would silently open nothing) or a short admin
        key is a start-up error naming it (the key itself is never shown: its first characters only)."""
        for key, scopes in self.api_keys.items():
            shown = f"{key[:2]}…({len(key)} characters)"
            unknown = sorted(set(scopes) - set(SCOPES))
            if unknown:
                raise ValueError(
                    f"CLM_API_KEYS: key {shown} has unknown scope(s) {', '.join(map(repr, unknown))}; "
                    f"scopes are {', '.join(SCOPES)}"
                )
            if not key.strip() or any(ord(c) < 33 or ord(c) == 127 for c in key):
                raise ValueError(f"CLM_API_KEYS: key {shown} is empty or holds spaces or control characters")
            if "admin" in scopes and len(key) < self.min_admin_key_length:
                raise ValueError(
                    f"CLM_API_KEYS: admin key {shown} is shorter than {self.min_admin_key_length} characters "
                    "(CLM_MIN_ADMIN_KEY_LENGTH)"
                )
        return self

    def decision_log_url(self) -> str:
        return self.decision_log or f"sqlite:///{self.data_dir}/decisions.db"

    def decision_journal_dir(self) -> Path:
        if self.decision_journal is not None:
            return self.decision_journal
        digest = hashlib.sha256(f"{self.decision_log_url()}|{self.decision_log_schema or ''}".encode())
        return self.data_dir / "decision-journal" / digest.hexdigest()[:16]

    def scopes_of(self, key: str) -> frozenset[str] | None:
        """The scopes of an API key (constant-time comparison against every configured key), None if unknown."""
        found: frozenset[str] | None = None
        for known, scopes in self.api_keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = frozenset(scopes)
        return found
