"""What serves: the churn model, the upgrade model and the policy loaded from the MLflow registry by alias,
as one immutable `ModelSet`. A reload loads and warms a new set off the request path and swaps one
reference, so a request keeps the set it started with; a failed load keeps the old set serving."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.artifacts import ArtifactRefused, probe_in_subprocess
from models.config import ModelsConfig
from models.decision import (
    DecisionModels,
    feature_registry,
    find_versions,
    load_exact_versions,
    registered_names,
)
from serving.ticker import Ticker

log = logging.getLogger(__name__)
TARGETS = ("churn", "upgrade", "policy")

ModelSet = DecisionModels  # what serves is the one decision-model set of `models.decision`


class RegistryLoader:
    """Loads a ModelSet by alias from the MLflow registry (the tracking URI comes from the environment),
    through `models.decision`'s one loader; the feature registry is built once and shared by every set."""

    def __init__(self, config: ModelsConfig, *, trial_load: bool = True) -> None:
        self.config = config
        self.names = registered_names(config, TARGETS)
        self.registry = feature_registry(config)
        # every artifact is loaded first in a throw-away process: a file that crashes LightGBM natively
        # costs a refused load, not this server
        self.probe = self._trial_load if trial_load else None
        self._tried: set[str] = (
            set()
        )  # versions whose trial load passed (their checksums are checked at every load)

    def _trial_load(self, artifacts: Mapping[str, Path]) -> None:
        """The trial load of the versions not tried yet (a reload of the policy alone tries the policy alone)."""
        untried = {label: path for label, path in artifacts.items() if label not in self._tried}
        probe_in_subprocess(untried)
        self._tried.update(untried)

    def versions(self, alias: str) -> dict[str, str]:
        """The version each alias points at now (raises ModelsMissing when one is missing)."""
        return find_versions(self.names, (alias,))[0]

    def load(self, alias: str) -> ModelSet:
        return self.load_versions(self.versions(alias), alias)

    def load_versions(self, versions: dict[str, str], alias: str) -> ModelSet:
        """The ModelSet of exact versions (registered name → version), e.g. to replay a logged decision."""
        return load_exact_versions(self.config, versions, alias, registry=self.registry, probe=self.probe)


def check_store_features(models: ModelSet, store_feature_version: str | None) -> None:
    """The online store's features are the ones the models were trained on (ArtifactRefused naming both)."""
    labels = models.version_labels()  # `features` is the churn model's feature version
    if store_feature_version is not None and store_feature_version != labels["features"]:
        raise ArtifactRefused(
            f"feature versions differ: the online store's snapshot has {store_feature_version}, "
            f"{labels['churn_model']} has {labels['features']}"
        )


@dataclass
class ReloadStatus:
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    failures: int = 0


class ModelHolder:
    """The current (and optional shadow) ModelSet, swapped atomically by `reload`."""

    def __init__(
        self,
        load: Callable[[str], ModelSet],
        versions: Callable[[str], dict[str, str]],
        *,
        alias: str,
        shadow_alias: str | None = None,
        warm: Callable[[ModelSet], None] = lambda models: None,
        on_failure: Callable[[Exception], None] = lambda exc: None,
    ) -> None:
        self._load, self._versions, self._warm, self._on_failure = load, versions, warm, on_failure
        self.alias, self.shadow_alias = alias, shadow_alias
        self.current: ModelSet | None = None
        self.shadow: ModelSet | None = None
        self.status = ReloadStatus()
        self._lock = threading.Lock()
        self._poller = Ticker("clm-model-poller", self._follow_aliases, "alias poll")

    def reload(self, *, force: bool = True) -> dict[str, Any]:
        """Load the aliases' versions (only if they moved, unless forced), warm them, then swap. On any
        error the old set keeps serving; the error is kept for /readyz and counted."""
        with self._lock:
            self.status.last_attempt = time.time()
            try:
                changed = False
                if force or self.current is None or self._versions(self.alias) != self.current.versions:
                    fresh = self._load(self.alias)
                    self._warm(fresh)
                    self.current, changed = fresh, True
                if self.shadow_alias and (
                    force or self.shadow is None or self._versions(self.shadow_alias) != self.shadow.versions
                ):
                    shadow = self._load(self.shadow_alias)
                    self._warm(shadow)
                    self.shadow = shadow
                self.status.last_success = time.time()
                self.status.last_error = None
                assert self.current is not None
                return {"reloaded": changed, "versions": self.current.version_labels()}
            except Exception as exc:
                self.status.failures += 1
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.error("model reload failed; keeping %s: %s", self.describe(), exc)
                self._on_failure(exc)
                raise

    def describe(self) -> str:
        return "nothing loaded" if self.current is None else str(self.current.version_labels())

    def _follow_aliases(self) -> None:
        with contextlib.suppress(Exception):  # already logged and counted; keep polling
            self.reload(force=False)

    def start_polling(self, interval_seconds: float) -> None:
        """Follow the aliases every `interval_seconds` (a failed reload is already logged and counted)."""
        self._poller.start(interval_seconds)

    def stop(self) -> None:
        self._poller.stop()
