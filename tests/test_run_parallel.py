"""`make book`'s runner: chapters in parallel workers, skipped when their inputs are unchanged,
a failing chapter not stopping the others, and the site not built from a failed run."""
import json
import re
import subprocess
from pathlib import Path

import nbformat

from utils.course import REPO_ROOT
from utils.course.run import _executed_profile, chapter_inputs, run, succeeded, used_data, used_modules

KERNELSPEC = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def _notebook(path: Path, *sources: str) -> None:
    cells = [nbformat.v4.new_code_cell("PROFILE = 'cpu'", metadata={"tags": ["parameters"]}),
             *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=KERNELSPEC), path)


def _lines():
    out = []
    return out, lambda *a, **k: out.append(" ".join(map(str, a)))


def test_parallel_incremental_and_robust(tmp_path):
    src, build = tmp_path / "src", tmp_path / "build"
    src.mkdir()
    work = "import time, threading\ntime.sleep(1.0)\nprint('profile', PROFILE, threading.active_count())"
    _notebook(src / "a.ipynb", work)
    _notebook(src / "b.ipynb", work)
    _notebook(src / "bad.ipynb", "raise ValueError('boom')")
    lines, write = _lines()
    first = run(["a", "b", "bad"], "smoke", build_dir=build, src_dir=src, jobs=2, write=write)
    a, b, bad = first
    assert (a.status, b.status, bad.status) == ("ok", "ok", "failed") and "boom" in bad.error
    # two workers: at least two chapters were executing at the same time
    spans = sorted((r.started, r.started + r.seconds) for r in first)
    assert any(s2 < e1 for (_, e1), (s2, _) in zip(spans, spans[1:])), spans
    text = "\n".join(lines)
    assert re.search(r"\[\d/3 done, \d running, \d queued\] a \[smoke\] running", text)
    assert re.search(r"\] bad \[smoke\] failed \d+ s \(no earlier run\): .*boom", text)
    assert "FAILED: bad" in text and "in 2 worker(s)" in text
    report = json.loads((build / "run_report.json").read_text())
    assert report["a:smoke"]["inputs"] == chapter_inputs(src / "a.ipynb", "smoke")[0]

    # nothing changed: the ok chapters are not executed again (a failed one would be)
    lines, write = _lines()
    second = run(["a", "b"], "smoke", build_dir=build, src_dir=src, jobs=2, write=write)
    assert [r.status for r in second] == ["cached", "cached"] and succeeded(second) and not succeeded(first)
    assert re.search(r"\] a \[smoke\] cached \(last report \d+ s\) inputs unchanged", "\n".join(lines))

    # an edited notebook, another profile, or --force runs again
    _notebook(src / "b.ipynb", work, "x = 1")
    assert [r.status for r in run(["a", "b"], "smoke", build_dir=build, src_dir=src, write=print)] == ["cached", "ok"]
    assert [r.status for r in run(["a"], "cpu", build_dir=build, src_dir=src, write=print)] == ["ok"]
    assert _executed_profile(build / "executed" / "a.ipynb") == "cpu"  # so a smoke run cannot reuse it
    assert [r.status for r in run(["b"], "smoke", build_dir=build, src_dir=src, force=True, write=print)] == ["ok"]


def test_inputs_follow_the_utils_modules_and_data_a_notebook_uses(tmp_path):
    root = tmp_path / "repo"
    (root / "utils" / "topic").mkdir(parents=True)
    (root / "utils" / "__init__.py").write_text("from utils.core import f\n")
    (root / "utils" / "core.py").write_text("import numpy\n")
    (root / "utils" / "topic" / "__init__.py").write_text("")
    (root / "utils" / "topic" / "model.py").write_text("from . import helpers\n\ndef load():\n    from utils.store import get\n    return get(f'ch09_{1}')\n")
    (root / "utils" / "topic" / "helpers.py").write_text("X = 1\n")
    (root / "utils" / "store.py").write_text("def get(name): ...\n")
    (root / "utils" / "unused.py").write_text("Y = 2\n")
    (root / "data" / "lm" / "tiny-x").mkdir(parents=True)
    (root / "data" / "ch09_agent.pt").write_bytes(b"1")
    (root / "data" / "ch10_other.pt").write_bytes(b"2")
    (root / "data" / "lm" / "tiny-x" / "model.bin").write_bytes(b"3")
    (root / "data" / "manifest.json").write_text("{}")
    (root / "requirements.txt").write_text("numpy==2.4.6\n")
    nb = root / "ch.ipynb"
    _notebook(nb, "%matplotlib inline\nfrom utils.topic.model import load\nmodel = 'tiny-x'")
    assert list(used_modules(nb, root)) == ["utils", "utils.core", "utils.store", "utils.topic", "utils.topic.helpers",
                                            "utils.topic.model"]
    _, files = chapter_inputs(nb, "cpu", root)
    data = {f.relative_to(root).as_posix() for f in files if "data" in f.parts}
    assert data == {"data/ch09_agent.pt", "data/lm/tiny-x/model.bin"}
    assert used_data(["nothing here"], root / "data") == []

    before = chapter_inputs(nb, "cpu", root)[0]
    assert chapter_inputs(nb, "smoke", root)[0] != before
    (root / "utils" / "unused.py").write_text("Y = 3\n")
    (root / "data" / "ch10_other.pt").write_bytes(b"22")
    assert chapter_inputs(nb, "cpu", root)[0] == before
    for path in ["utils/topic/helpers.py", "utils/store.py", "data/ch09_agent.pt", "requirements.txt"]:
        (root / path).write_text((root / path).read_text() + "\n")
        after = chapter_inputs(nb, "cpu", root)[0]
        assert after != before, path
        before = after


def test_make_book_builds_the_site_only_after_a_clean_run():
    dry = subprocess.run(["make", "-n", "book", "PY=python3", "PROFILE=smoke", "JOBS=3", "FORCE=1"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    run_line = next(line for line in dry.splitlines() if "utils.course run" in line)
    assert "--jobs 3" in run_line and "--force" in run_line and "--profile smoke" in run_line
    # one shell line: `run ... && book`, so a non-zero exit from the run stops before the site build
    assert re.search(r"utils\.course run .*&& .*utils\.course book --executed", run_line)
