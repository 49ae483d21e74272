"""Install a package WITHOUT its declared dependencies into a course-owned folder, beside the pinned torch.

Some released agents need a package whose declared requirements would break the course's environment
(lczerolens pulls torchvision, which can replace the CPU torch; procgen-mirror declares numpy<2 and
gym<1). Such packages never go into requirements.txt. `ensure_no_deps` installs them with
`pip install --no-deps --target DIR` (default `_build/pip-no-deps` in the repository) and puts DIR at the
END of sys.path, so anything installed normally wins. Their runtime dependencies that may be missing
(`deps`) are installed normally, with the installed torch held by a pip constraint.

    where = ensure_no_deps(("procgen-mirror==0.10.7", "gym3==0.3.3", "gym==0.26.2"),
                           provides=("procgen", "gym3", "gym"), deps={"cffi": "cffi==2.0.0"}, hint=...)

Used by utils.alphazero.leela.ensure_lczerolens and utils.goal_misgen.procgen_maze.ensure_procgen.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from utils.core import CourseError


def default_target() -> Path:
    from utils.checkpoints import REPO_ROOT

    return REPO_ROOT / "_build" / "pip-no-deps"


def pip_install(args: Sequence[str], what: str, hint: str) -> None:
    """`python -m pip install -q ARGS`; a failure stops in one line naming `what`, then `hint`."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:160]
        raise CourseError(f"could not install {what} ({last}): {hint}")


def install_held(pins: Sequence[str], hint: str) -> None:
    """Install `pins` normally, with the installed torch held by a pip constraint (never replaced)."""
    import torch

    with tempfile.TemporaryDirectory() as d:
        hold = Path(d) / "constraints.txt"
        hold.write_text(f"torch=={torch.__version__}\n")
        pip_install(["-c", str(hold), *pins], " ".join(pins), hint)


def add_target(target: str | os.PathLike | None = None) -> Path:
    """Put the no-deps folder at the end of sys.path (once) and refresh the import caches."""
    target = Path(target or default_target())
    if str(target) not in sys.path:
        sys.path.append(str(target))
    importlib.invalidate_caches()
    return target


def ensure_no_deps(no_deps: Sequence[str], provides: Sequence[str], hint: str,
                   deps: Mapping[str, str] | None = None, target: str | os.PathLike | None = None) -> str:
    """Make the modules `provides` importable: each of `deps` ({module: pin}) that is missing is installed
    with torch held; then, unless every module of `provides` already imports from somewhere, the pins
    `no_deps` are installed WITHOUT dependencies into `target` (default _build/pip-no-deps), which goes at
    the end of sys.path. Returns the folder of the first module of `provides`."""
    missing = [pin for module, pin in (deps or {}).items() if importlib.util.find_spec(module) is None]
    if missing:
        install_held(missing, hint)
    if all(importlib.util.find_spec(m) is not None for m in provides):
        return str(Path(importlib.util.find_spec(provides[0]).origin).parent)
    target = Path(target or default_target())
    if not all((target / m).is_dir() for m in provides):
        pip_install(["--no-deps", "--target", str(target), *no_deps], f"{' '.join(no_deps)} into {target}", hint)
    add_target(target)
    return str(target / provides[0])
