"""The standard setup cell, identical in every notebook.

Its text is generated here from a template and the repository URL in _config.yml
(the one place the URL is set); `python -m utils.course notebooks` writes it into
every notebook and `check` fails on any notebook whose setup cell differs.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from utils.course import REPO_ROOT

SETUP_TAG = "setup"

# Packages the Colab cell does not install: torch (Colab's own build must stay), and the
# tools that build the website, which would replace parts of Colab's notebook server.
COLAB_SKIP = ("torch", "jupyter-book", "jupyterlab")

_TEMPLATE = '''\
# Course setup: identical in every notebook, written by `python -m utils.course notebooks`.
# In Colab: installs the pinned packages (never torch) and fetches the course's utils/ and data/.
# Elsewhere: only makes `utils` importable (install with `make book` or `pip install -r requirements.txt`).
import subprocess
import sys
from pathlib import Path

COURSE_REPO = "{repo_url}"
COURSE_BRANCH = "{branch}"


def course_setup(in_colab=None, run=subprocess.check_call, colab_root="/content/rl-interp-course"):
    """Find or fetch the course repository, put it on sys.path, and return its root."""
    if in_colab is None:
        in_colab = "google.colab" in sys.modules
    if in_colab:
        root = Path(colab_root)
        if not (root / "utils" / "course").is_dir():
            run(["git", "clone", "--depth", "1", "--branch", COURSE_BRANCH, COURSE_REPO, str(root)])
        pins = [line.split("#")[0].strip() for line in (root / "requirements.txt").read_text().splitlines()]
        pins = [p for p in pins if p and p.split("==")[0].lower() not in {skip}]
        run([sys.executable, "-m", "pip", "install", "-q", *pins])
    else:
        here = Path.cwd().resolve()
        root = next((p for p in (here, *here.parents) if (p / "utils" / "course").is_dir()), None)
        if root is None:
            raise RuntimeError("course utils/ not found: start Jupyter inside the course repository, or open this notebook in Colab")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


COURSE_ROOT = course_setup()'''


def read_config(root: Path = REPO_ROOT) -> dict:
    return yaml.safe_load((root / "_config.yml").read_text())


def repository(root: Path = REPO_ROOT) -> tuple[str, str]:
    """(url, branch) of the course repository, from _config.yml."""
    repo = read_config(root).get("repository", {})
    url = repo.get("url")
    if not url:
        raise ValueError("_config.yml has no repository.url: set it to the course's GitHub URL")
    return url.rstrip("/"), repo.get("branch", "main")


def setup_cell_source(root: Path = REPO_ROOT) -> str:
    url, branch = repository(root)
    skip = "{" + ", ".join(repr(s) for s in COLAB_SKIP) + "}"
    return _TEMPLATE.format(repo_url=url, branch=branch, skip=skip)
