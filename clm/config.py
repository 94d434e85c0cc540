"""The versioned business config: shipped defaults, deep-merged with a user's own TOML file."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULTS_RESOURCE = "defaults.toml"


class ConfigError(ValueError):
    """A config file that cannot be read or does not fit the defaults' shape."""


def _merge(base: dict[str, Any], override: dict[str, Any], path: str = "") -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}.{key}" if path else key
        if key in merged and isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value, where)
        elif key in merged and isinstance(merged[key], dict) != isinstance(value, dict):
            raise ConfigError(
                f"config key {where!r}: expected {'a table' if isinstance(merged[key], dict) else 'a value'}"
            )
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def default_config() -> dict[str, Any]:
    """The shipped defaults (clm/defaults.toml)."""
    text = resources.files("clm").joinpath(DEFAULTS_RESOURCE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Defaults, overridden key by key by the user's file when one is given."""
    config = default_config()
    if path is None:
        return config
    try:
        user = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return _merge(config, user)


def config_digest(config: dict[str, Any]) -> str:
    """A short stable hash of a resolved config, logged with every run that used it."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
