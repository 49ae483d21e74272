"""Checkpoints and artifacts in data/, listed in data/manifest.json.

Every artifact has an entry: file, sha256, size, the config it was made with, the
command that regenerates it, and the metrics it reached. Loading verifies the sha256,
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


def read_manifest(data_dir: str | os.PathLike = DATA_DIR) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        return {"artifacts": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): restore it with `git checkout -- {path.name}`") from None
    manifest.setdefault("artifacts", {})
    return manifest


def _write_manifest(manifest: dict[str, Any], data_dir: Path) -> None:
    manifest["artifacts"] = dict(sorted(manifest["artifacts"].items()))
    _atomic_write(data_dir / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())


def register_artifact(path: str | os.PathLike, name: str, config: dict[str, Any], command: str,
                      metrics: dict[str, Any], data_dir: str | os.PathLike = DATA_DIR) -> dict[str, Any]:
    """Add (or update) the manifest entry of a file already written under `data_dir`."""
    data_dir = Path(data_dir)
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"cannot register {path}: the file does not exist")
    if not command:
        raise CheckpointError(f"artifact {name!r} needs the command that regenerates it")
    entry = {
        "file": str(path.resolve().relative_to(data_dir.resolve())),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "config": config,
        "command": command,
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest = read_manifest(data_dir)
    manifest["artifacts"][name] = entry
    _write_manifest(manifest, data_dir)
    return entry


def save_checkpoint(state: dict[str, Any], name: str, config: dict[str, Any], command: str,
                    metrics: dict[str, Any], data_dir: str | os.PathLike = DATA_DIR) -> dict[str, Any]:
    """Save a state dict (or any torch-serialisable dict) as data/<name>.pt and record it in the manifest."""
    if not isinstance(state, dict):
        raise CheckpointError(f"save_checkpoint takes a dict (e.g. model.state_dict()), got {type(state).__name__}")
    buf = io.BytesIO()
    torch.save(state, buf)
    path = Path(data_dir) / f"{name}.pt"
    _atomic_write(path, buf.getvalue())
    return register_artifact(path, name, config, command, metrics, data_dir)


def artifact_path(name: str, data_dir: str | os.PathLike = DATA_DIR, verify: bool = True) -> Path:
    """The verified path of artifact `name`: raises a one-line CheckpointError if it is unknown,
    missing or corrupted (sha256 mismatch), naming the command that regenerates it."""
    data_dir = Path(data_dir)
    artifacts = read_manifest(data_dir)["artifacts"]
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
    for name in read_manifest(data_dir)["artifacts"]:
        try:
            artifact_path(name, data_dir)
        except CheckpointError as e:
            problems.append(str(e))
    return problems
