"""The standard setup cell, identical in every notebook, and the Colab install it calls.

The cell's text is generated here from a template and the repository URL in _config.yml
(the one place the URL is set); `python -m utils.course notebooks` writes it into every
notebook and `check` fails on any notebook whose setup cell differs.

In Colab the cell clones the course once (reusing a complete clone, replacing an
incomplete one), then loads *this file on its own* from the clone and calls
`colab_install`: it installs requirements-colab.txt (the packages the notebooks import at
run time) with a constraint that holds the installed torch, skips pip when every requirement
is already met, and says in one line when a package that was already imported changed
version (restart needed). The packages Colab ships (numpy, transformers, PyYAML, ...) have a
compatible range there, from requirements.txt's pin up to the next major version, so a fresh
Colab runtime keeps its own newer versions: nothing is downgraded and no restart is needed.
The others are pinned exactly, as in requirements.txt. This module imports only the standard
library at the top (and pip's own `packaging` when it compares versions): `utils/__init__`
would import torch and numpy before pip runs.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

SETUP_TAG = "setup"
COLAB_REQUIREMENTS = "requirements-colab.txt"

# Packages requirements.txt pins that the Colab cell never installs: torch (Colab's own build
# stays; a constraint holds it) and the site, test and benchmark tools (the runtime file's
# test holds it to what the notebooks import).
COLAB_SKIP = ("torch", "jupyter-book", "jupyterlab", "nbval", "papermill", "pytest", "sphinxcontrib-bibtex", "psutil",
              "einops", "jaxtyping")

_TEMPLATE = '''\
# Course setup: identical in every notebook, written by `python -m utils.course notebooks`.
# In Colab: clones the course once (an incomplete clone is replaced), installs the packages the
# notebooks import (Colab's own at compatible versions, kept; torch is never touched), and puts
# utils/ on the path. Safe to re-run.
# Elsewhere: only makes `utils` importable (install with `make book`, see book/setup.md).
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

COURSE_REPO = "{repo_url}"
COURSE_BRANCH = "{branch}"


def _git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True)


def _complete_clone(root):
    """A clone whose checkout finished: HEAD resolves and no tracked file is missing."""
    head = _git("-C", str(root), "rev-parse", "-q", "--verify", "HEAD")
    if not (root / ".git").is_dir() or head.returncode:
        return False
    status = _git("-C", str(root), "status", "--porcelain", "--untracked-files=no")
    deleted = any("D" in line[:2] for line in status.stdout.splitlines())
    return status.returncode == 0 and not deleted


def course_setup(in_colab=None, colab_root="/content/rl-interp-course", repo=COURSE_REPO):
    """Find or fetch the course repository, put it on sys.path, and return its root."""
    if in_colab is None:
        in_colab = "google.colab" in sys.modules
    if in_colab:
        root = Path(colab_root)
        if not _complete_clone(root):  # none yet, or an interrupted run left part of one
            shutil.rmtree(root, ignore_errors=True)
            part = root.with_name(root.name + ".partial")
            shutil.rmtree(part, ignore_errors=True)
            done = _git("clone", "-q", "--depth", "1", "-b", COURSE_BRANCH, repo, str(part))
            if done.returncode:
                shutil.rmtree(part, ignore_errors=True)
                why = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"course setup: could not clone {{repo}} ({{why}}); check that "
                                   "this runtime has internet access, then run this cell again")
            part.rename(root)
        # the installer: the clone's utils/course/setup_cell.py, alone (it imports nothing heavy)
        path = root / "utils" / "course" / "setup_cell.py"
        spec = importlib.util.spec_from_file_location("course_setup_cell", path)
        installer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(installer)
        installer.colab_install(root)
    else:
        here = Path.cwd().resolve()
        found = [p for p in (here, *here.parents) if (p / "utils" / "course").is_dir()]
        root = found[0] if found else None
        if root is None:
            raise RuntimeError("course utils/ not found: start Jupyter inside the course "
                               "repository, or open this notebook in Colab")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


COURSE_ROOT = course_setup()'''


def _repo_root() -> Path:
    from utils.course import REPO_ROOT

    return REPO_ROOT


def read_config(root: Path | None = None) -> dict:
    import yaml

    return yaml.safe_load(((root or _repo_root()) / "_config.yml").read_text())


def repository(root: Path | None = None) -> tuple[str, str]:
    """(url, branch) of the course repository, from _config.yml."""
    repo = read_config(root).get("repository", {})
    url = repo.get("url")
    if not url:
        raise ValueError("_config.yml has no repository.url: set it to the course's GitHub URL")
    return url.rstrip("/"), repo.get("branch", "main")


def setup_cell_source(root: Path | None = None) -> str:
    url, branch = repository(root)
    return _TEMPLATE.format(repo_url=url, branch=branch)


# ---------------------------------------------------------------- the Colab install

def read_pins(path: Path) -> list[str]:
    """The requirement lines of a requirements file (`name==version` or `name>=low,<high`),
    comments dropped."""
    pins = [line.split("#")[0].strip() for line in Path(path).read_text().splitlines()]
    return [p for p in pins if p]


def _name(pin: str) -> str:
    return re.split(r"[=<>!~\[ ]", pin, maxsplit=1)[0]


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _specifier(pin: str):
    """The version specifier of a requirement line, with the `packaging` library, or the copy
    inside pip (always there where pip runs) when `packaging` itself is not installed."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pragma: no cover - every runtime with pip has the vendored copy
        from pip._vendor.packaging.specifiers import SpecifierSet
    return SpecifierSet(pin[len(_name(pin)):].strip())


def requirement_met(pin: str) -> bool:
    """True when the installed version of the pin's package satisfies it (`==`, or a range)."""
    have = installed_version(_name(pin))
    return have is not None and _specifier(pin).contains(have, prereleases=True)


def missing_pins(pins: list[str]) -> list[str]:
    """The requirements that the installed packages do not meet (absent, or outside the range)."""
    return [p for p in pins if not requirement_met(p)]


def imported_versions() -> dict[str, str]:
    """{distribution: version} of every installed distribution with a module imported now."""
    top = {m.split(".")[0] for m in list(sys.modules)}
    dists = {d for m, ds in metadata.packages_distributions().items() if m in top for d in ds}
    return {d: v for d in sorted(dists) if (v := installed_version(d))}


def install_command(root: Path, constraints: Path) -> list[str]:
    """The pip command the Colab cell runs: the runtime pins, with `constraints` holding torch."""
    return [sys.executable, "-m", "pip", "install", "-q", "-c", str(constraints), *read_pins(root / COLAB_REQUIREMENTS)]


def colab_install(root: Path, run=subprocess.run, write=print) -> list[str]:
    """Install the notebooks' runtime packages into this Python unless all are there; return
    the pins that were missing. A failure, or an upgrade of an already imported package
    (the session must restart), raises RuntimeError with one line that says what to do."""
    root = Path(root)
    pins = read_pins(root / COLAB_REQUIREMENTS)
    missing = missing_pins(pins)
    torch = installed_version("torch")
    if not missing:
        write(f"course setup: the course's {len(pins)} packages are installed at compatible versions (torch {torch})")
        return []
    before = imported_versions()
    constraints = root / "_build" / "colab-constraints.txt"
    constraints.parent.mkdir(parents=True, exist_ok=True)
    # hold torch where it is: a pin that needs another torch fails here instead of replacing it
    constraints.write_text(f"torch=={torch}\n" if torch else "")
    write(f"course setup: installing {len(missing)} package(s) ({', '.join(_name(p) for p in missing)}), "
          f"holding torch {torch or '(none installed: pip picks one)'} ...", flush=True)
    done = run(install_command(root, constraints), capture_output=True, text=True)
    if done.returncode:
        lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        why = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "no output")
        hint = (f"a pin needs a torch other than this runtime's {torch}: report it at the course's issues, or run "
                "the cpu profile locally (book/setup.md)" if "torch" in why.lower() else
                "check that this runtime has internet access, then run this cell again")
        raise RuntimeError(f"course setup: pip could not install the course's packages ({why[:300]}); {hint}")
    importlib.invalidate_caches()
    changed = [f"{d} {v} -> {installed_version(d)}" for d, v in before.items() if installed_version(d) != v]
    if changed:
        raise RuntimeError(f"course setup: installed, but {', '.join(changed)} had already been imported: restart "
                           "the session (Runtime > Restart session), then run this cell again")
    write(f"course setup: installed {len(missing)} package(s); torch {torch} kept")
    return missing
