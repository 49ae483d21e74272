"""Checkpoints and artifacts in data/, listed in data/manifest.json.

Every artifact has an entry: file, sha256, size, the config it was made with, the
command that regenerates it, the metrics it reached, and its licence (the course's own
artifacts: ARTIFACT_LICENCE, the course's code licence, see LICENSE-CONTENT). The manifest's
"released" section lists the released models the course downloads (utils/lm/api.py), each
with its source and licence. Loading verifies the sha256,
so a missing or corrupted file gives one clear line that says how to get it back.
Writes go to a temporary file and are renamed into place, so an interrupted save
never leaves a half-written artifact or manifest behind.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from utils.core import CourseError

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
MANIFEST = "manifest.json"
# the licence of every artifact the course makes and ships in data/ (LICENSE-CONTENT says why)
ARTIFACT_LICENCE = "MIT"


class CheckpointError(CourseError):
    pass


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _restore_hint(path: Path) -> str:
    """How to get a manifest back, as a command that works from any directory."""
    try:
        rel = path.resolve().relative_to(REPO_ROOT)
        return f"restore it with `git -C {REPO_ROOT} checkout -- {rel}`"
    except ValueError:  # a manifest outside the course repository (e.g. a scratch folder)
        return "restore it from where it came from, or delete the folder and save the artifacts again"


def read_manifest(data_dir: str | os.PathLike = DATA_DIR, must_exist: bool = False) -> dict[str, Any]:
    """The manifest of `data_dir`. A missing manifest is an empty one when saving (must_exist=False)
    and an error when loading (must_exist=True: a course without its manifest cannot verify anything)."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        if must_exist:
            raise CheckpointError(f"{path} is missing: {_restore_hint(path)}")
        return {"artifacts": {}}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" ({e.msg} at line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise CheckpointError(f"{path} is not valid JSON{where}: {_restore_hint(path)}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.setdefault("artifacts", {}), dict):
        raise CheckpointError(f"{path} has no 'artifacts' table: {_restore_hint(path)}")
    if must_exist and not manifest["artifacts"]:
        raise CheckpointError(f"{path} lists no artifacts: {_restore_hint(path)}")
    return manifest


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    manifest["artifacts"] = dict(sorted(manifest["artifacts"].items()))
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


def _entry(path: Path, data_dir: Path, digest: str, size: int, config, command: str, metrics) -> dict[str, Any]:
    return {"file": str(path.resolve().relative_to(data_dir.resolve())), "sha256": digest, "bytes": size,
            "config": config, "command": command, "metrics": metrics, "licence": ARTIFACT_LICENCE,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def register_artifact(path: str | os.PathLike, name: str, config: dict[str, Any], command: str,
                      metrics: dict[str, Any], data_dir: str | os.PathLike = DATA_DIR) -> dict[str, Any]:
    """Add (or update) the manifest entry of a file already written under `data_dir`."""
    data_dir = Path(data_dir)
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"cannot register {path}: the file does not exist")
    if not command:
        raise CheckpointError(f"artifact {name!r} needs the command that regenerates it")
    manifest = read_manifest(data_dir)
    entry = _entry(path, data_dir, sha256_file(path), path.stat().st_size, config, command, metrics)
    manifest["artifacts"][name] = entry
    _atomic_write(data_dir / MANIFEST, _manifest_bytes(manifest))
    return entry


def save_checkpoint(state: dict[str, Any], name: str, config: dict[str, Any], command: str,
                    metrics: dict[str, Any], data_dir: str | os.PathLike = DATA_DIR) -> dict[str, Any]:
    """Save a state dict (or any torch-serialisable dict) as data/<name>.pt and record it in the manifest.

    All or nothing: the manifest is read and the new entry built before anything is written, and
    the checkpoint and the manifest are each written to a temporary file and renamed into place,
    so a failed save (unreadable manifest, bad config, full disk) leaves the previous checkpoint
    and the manifest exactly as they were."""
    if not isinstance(state, dict):
        raise CheckpointError(f"save_checkpoint takes a dict (e.g. model.state_dict()), got {type(state).__name__}")
    if not command:
        raise CheckpointError(f"artifact {name!r} needs the command that regenerates it")
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)  # fails here, before any write, if the manifest is unreadable
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = data_dir / f"{name}.pt"
    entry = _entry(path, data_dir, hashlib.sha256(data).hexdigest(), len(data), config, command, metrics)
    manifest["artifacts"][name] = entry
    try:
        manifest_data = _manifest_bytes(manifest)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"config or metrics of {name!r} are not JSON-serialisable ({e}): nothing was written") from None
    _atomic_write(path, data)
    _atomic_write(data_dir / MANIFEST, manifest_data)
    return entry


def artifact_path(name: str, data_dir: str | os.PathLike = DATA_DIR, verify: bool = True) -> Path:
    """The verified path of artifact `name`: raises a one-line CheckpointError if it is unknown,
    missing or corrupted (sha256 mismatch), naming the command that regenerates it."""
    data_dir = Path(data_dir)
    artifacts = read_manifest(data_dir, must_exist=True)["artifacts"]
    if name not in artifacts:
        known = ", ".join(sorted(artifacts)) or "none"
        raise CheckpointError(f"no artifact named {name!r} in {data_dir / MANIFEST} (known: {known})")
    entry = artifacts[name]
    path = data_dir / entry["file"]
    if not path.exists():
        raise CheckpointError(f"{path} is missing: regenerate it with `{entry['command']}`")
    if verify and sha256_file(path) != entry["sha256"]:
        raise CheckpointError(f"{path} is corrupted (sha256 does not match the manifest): regenerate it with `{entry['command']}`")
    return path


def load_checkpoint(name: str, data_dir: str | os.PathLike = DATA_DIR) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, manifest entry) of the verified checkpoint `name`."""
    path = artifact_path(name, data_dir)
    entry = read_manifest(data_dir)["artifacts"][name]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file whose hash matches but that torch cannot read was saved wrongly
        raise CheckpointError(f"{path} cannot be read by torch ({type(e).__name__}): regenerate it with `{entry['command']}`") from None
    return state, entry


def verify_all(data_dir: str | os.PathLike = DATA_DIR) -> list[str]:
    """One line per artifact that is missing or corrupted (empty when all are good)."""
    problems = []
    for name in read_manifest(data_dir, must_exist=True)["artifacts"]:
        try:
            artifact_path(name, data_dir)
        except CheckpointError as e:
            problems.append(str(e))
    return problems
