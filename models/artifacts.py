"""Model artifacts verified before they can hurt: a checksum manifest (sha256 of every file of a bundle or
policy directory) written when the artifact is saved, recorded on the registered version, checked when it
is loaded; and a first load in a throw-away subprocess, so that a file LightGBM cannot parse safely (a
truncated booster aborts the process natively) costs a refused load, never the process that asked.

`python -m models.artifacts DIR...` is that subprocess: it loads each directory (a bundle or a policy) and
exits 0, or exits 1 naming the artifact and the error; a native crash shows as death by a signal."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST_FILE = "checksums.json"
# The registered version's tag holding the manifest's digest (set at registration, checked at load).
DIGEST_TAG = "artifact_sha256"


def digest_tag(artifact: str) -> str:
    """The version tag naming the digest of the artifact `artifact` (`artifact_sha256.bundle`)."""
    return f"{DIGEST_TAG}.{artifact}"


PROBE_TIMEOUT_SECONDS = 120.0


class ArtifactRefused(ValueError):
    """An artifact failed its checksum, its trial load, or does not match what it is loaded for."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (relative POSIX path → hex digest), the manifest left out."""
    path = Path(path)
    return {
        file.relative_to(path).as_posix(): file_sha256(file)
        for file in sorted(path.rglob("*"))
        if file.is_file() and file.relative_to(path).as_posix() != MANIFEST_FILE
    }


def write_manifest(path: Path) -> str:
    """Write `checksums.json` over the directory's files; returns its digest (what the version tag holds)."""
    (Path(path) / MANIFEST_FILE).write_text(json.dumps({"sha256": checksums(path)}, indent=2, sort_keys=True))
    return manifest_digest(path)


def manifest_digest(path: Path) -> str:
    """The sha256 of the directory's manifest file (one short value for a registry tag)."""
    return file_sha256(Path(path) / MANIFEST_FILE)


def verify_manifest(path: Path, *, expected_digest: str | None = None, required: bool = False) -> bool:
    """Check every file against the manifest; ArtifactRefused naming the first file that is missing, extra
    or different. Without a manifest: refused when `required` (or a digest is expected), else False
    (an artifact saved before manifests existed) — the caller says so."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        if required or expected_digest is not None:
            raise ArtifactRefused(f"{path}: no {MANIFEST_FILE}; the artifact cannot be verified")
        return False
    if expected_digest is not None and manifest_digest(path) != expected_digest:
        raise ArtifactRefused(
            f"{manifest_path}: checksum differs from the {DIGEST_TAG} recorded at registration ({expected_digest})"
        )
    try:
        recorded: dict[str, str] = json.loads(manifest_path.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactRefused(f"{manifest_path}: unreadable manifest ({exc})") from exc
    found = checksums(path)
    for name, digest in recorded.items():
        if name not in found:
            raise ArtifactRefused(f"{path / name}: listed in {MANIFEST_FILE} but missing")
        if found[name] != digest:
            raise ArtifactRefused(
                f"{path / name}: sha256 {found[name][:12]}… differs from the recorded {digest[:12]}…"
            )
    extra = sorted(set(found) - set(recorded))
    if extra:
        raise ArtifactRefused(f"{path / extra[0]}: not in {MANIFEST_FILE} ({len(extra)} unlisted file(s))")
    return True


def probe_in_subprocess(
    artifacts: Mapping[str, Path], *, timeout_seconds: float = PROBE_TIMEOUT_SECONDS
) -> None:
    """Load every artifact directory (label → path, e.g. `models:/clm-churn/3` → its bundle) once in a
    throw-away Python process. ArtifactRefused naming the artifact when that load fails, times out or
    kills the process (SIGABRT, SIGSEGV): the caller never touches a file that would have crashed it."""
    labels = {str(Path(path)): label for label, path in artifacts.items()}
    if not labels:
        return
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "models.artifacts", *labels],
            capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout_seconds, env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ArtifactRefused(
            f"trial load of {', '.join(labels.values())} did not finish in {timeout_seconds:.0f} s"
        ) from exc
    if done.returncode == 0:
        return
    started = [
        line.removeprefix("loading ") for line in done.stdout.splitlines() if line.startswith("loading ")
    ]
    path = started[-1] if started else next(iter(labels))
    artifact = f"{labels.get(path, path)} ({path})"
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ArtifactRefused(
            f"trial load of {artifact} crashed the loading process ({name}); artifact refused"
        )
    reported = [line for line in done.stdout.splitlines() if line.startswith("refused ")]
    detail = reported[-1].split(": ", 1)[-1] if reported else (done.stderr.strip()[-500:] or "no detail")
    raise ArtifactRefused(f"trial load of {artifact} failed: {detail}")


def load_artifact(path: Path):
    """A bundle or a policy directory, by the metadata file it holds (what the probe loads)."""
    from models.bundle import META_FILE, load_bundle
    from models.policy import POLICY_FILE, load_policy

    path = Path(path)
    if (path / META_FILE).is_file():
        return load_bundle(path)
    if (path / POLICY_FILE).is_file():
        return load_policy(path)
    raise ArtifactRefused(f"{path}: neither {META_FILE} nor {POLICY_FILE}: not a model artifact")


def _main(argv: list[str]) -> int:
    for arg in argv:
        print(f"loading {arg}", flush=True)  # the parent names this artifact if the load kills us
        try:
            load_artifact(Path(arg))
        except Exception as exc:
            print(f"refused {arg}: {exc}", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
