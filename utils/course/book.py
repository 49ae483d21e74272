"""Build the static site with Jupyter Book v1 (warnings are errors).

The site is built from a staging copy (_build/site_src) holding _config.yml, _toc.yml,
book/ and the solution notebooks: the committed ones (no outputs) or, with
`executed=True`, the papermill-executed ones from _build/executed/, so the site shows
real outputs while jupyter-book itself never executes anything. Staging folds the
plumbing cells (setup, parameters, papermill's injected parameters) behind one-line
captions (`utils.course.notebooks.fold_plumbing`), puts each exercise's hints, folded, before
its solution cell and folds the solution's code (`fold_exercises`), and points the site's MathJax cache at
_build/mathjax so the pinned MathJax copy (book/_ext/site_assets.py) is fetched once, and
puts the licence (LICENSE, LICENSE-CONTENT) in every page's footer.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

from utils.core import CourseError
from utils.course import REPO_ROOT
from utils.course.chapters import ready_chapters
from utils.course.notebooks import fold_exercises, fold_plumbing


def licence_footer(root: Path = REPO_ROOT) -> str:
    """The licence line on every page of the site (Jupyter Book's html.extra_footer): code under
    MIT (LICENSE), prose and notebooks under CC BY 4.0 (LICENSE-CONTENT), with links built from
    the repository URL in _config.yml."""
    from utils.course.setup_cell import repository

    url, branch = repository(root)
    blob = f"{url}/blob/{branch}"
    return (f'<p class="course-licence">Code: <a href="{blob}/LICENSE">MIT License</a>. Text and notebooks: '
            f'<a href="https://creativecommons.org/licenses/by/4.0/">CC BY 4.0</a> '
            f'(<a href="{blob}/LICENSE-CONTENT">what each licence covers</a>; '
            f'<a href="{blob}/CITATION.cff">how to cite the course</a>).</p>')


def stage(root: Path, build_dir: Path, executed: bool, executed_dir: Path | None = None) -> Path:
    src = build_dir / "site_src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    shutil.copy2(root / "_toc.yml", src / "_toc.yml")
    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("sphinx", {}).setdefault("config", {})["offline_mathjax_cache"] = str(root.resolve() / "_build" / "mathjax")
    config.setdefault("html", {})["extra_footer"] = licence_footer(root)
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(root / "book", src / "book", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "solutions").mkdir()
    for ch in ready_chapters():
        nb = ((executed_dir or build_dir / "executed") / f"{ch.id}.ipynb") if executed else (root / "solutions" / f"{ch.id}.ipynb")
        if not nb.exists():
            raise CourseError(f"{nb} is missing: run `python -m utils.course run --profile cpu` first")
        nbformat.write(fold_exercises(fold_plumbing(nbformat.read(nb, as_version=4))), src / "solutions" / nb.name)
    return src


def build(root: Path = REPO_ROOT, build_dir: Path | None = None, executed: bool = False,
          executed_dir: Path | None = None) -> Path:
    """Build the site into <build_dir>/html and return the path of its index.html; with
    `executed`, from the notebooks in `executed_dir` (default <build_dir>/executed)."""
    build_dir = (build_dir or root / "_build").resolve()
    src = stage(root, build_dir, executed, executed_dir)
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jb is None:
        raise CourseError("jupyter-book is not installed: run `pip install -r requirements.txt`")
    cmd = [jb, "build", str(src), "--warningiserror", "--keep-going", "--all", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise CourseError(f"jupyter-book build failed (exit {proc.returncode}); the warnings above say where")
    html = build_dir / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(src / "_build" / "html", html)
    return html / "index.html"
