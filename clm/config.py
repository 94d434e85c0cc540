"""The versioned business config: shipped defaults, deep-merged with a user's own TOML file, then
validated against `clm.config_schema.ClmConfig` so a typo or a wrong type stops the run with the key's name."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from clm.config_schema import ClmConfig

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
    """The shipped defaults (clm/defaults.toml), unvalidated: the raw file."""
    text = resources.files("clm").joinpath(DEFAULTS_RESOURCE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _merged(path: Path | None) -> dict[str, Any]:
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


def validate_config(config: dict[str, Any]) -> ClmConfig:
    """The typed config of a merged dict; ConfigError listing every problem, one per line."""
    try:
        return ClmConfig.model_validate(config)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(error) for error in exc.errors())) from None


def load_config(path: Path | None = None) -> ClmConfig:
    """Defaults, overridden key by key by the user's file when one is given, validated: the one typed
    config an entry point loads and hands down as sections (`config.features`, `config.policy`, …)."""
    return validate_config(_merged(path))


def with_overrides(config: ClmConfig, overrides: dict[str, Any]) -> ClmConfig:
    """`config` with some keys changed, given as nested tables like a user's file
    (`{"policy": {"exploration_share": 0.0}}`), validated again; a value of None removes the key."""
    return validate_config(_drop_none(_merge(config.as_dict(), overrides)))


def _drop_none(table: dict[str, Any]) -> dict[str, Any]:
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in table.items() if v is not None}


def config_digest(config: ClmConfig) -> str:
    """A short stable hash of a resolved config, logged with every run that used it."""
    blob = json.dumps(config.as_dict(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _describe(error: Any) -> str:
    """One pydantic error as a sentence about a config key."""
    loc = tuple(error["loc"])
    key = _dotted(loc)
    if error["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        parent = _dotted(loc[:-1])
        prefix = f"{parent}." if parent else ""
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            return f"config key {key!r} is not known; did you mean {prefix + close[0]!r}?"
        return f"config key {key!r} is not known; expected one of {', '.join(sorted(known))}"
    if error["type"] == "missing":
        return f"config key {key!r} is missing"
    message = error["msg"].replace("Input should be", "expected").replace("Value error, ", "")
    if not loc:
        return f"config: {message}"
    if error["type"] == "value_error":  # our own validators' messages already show the value
        return f"config key {key!r}: {message}"
    return f"config key {key!r}: {message}, got {error['input']!r}"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The valid key names of the table at `loc`, found by walking the schema's annotations."""
    annotation: Any = ClmConfig
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = annotation.model_fields[str(part)].annotation
        else:  # dict[str, X] or list[X]: the entry's type
            annotation = typing.get_args(annotation)[-1]
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """`X | None` → X and `Annotated[X, …]` → X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
