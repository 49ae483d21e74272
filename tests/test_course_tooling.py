"""The single-source generator, the fast checks, the runner CLI and the setup cell."""
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from utils.course import REPO_ROOT
from utils.course.check import exercise_problems, problems
from utils.course.notebooks import (HINTS_TAG, STUB, STUCK, ExerciseMarkupError, exercise_notebook, exercise_regions,
                                    fold_exercises, generate, hint_problems, stub_source)
from utils.course.setup_cell import setup_cell_source

SOLUTION = '''import torch


def f(x):
    """Docstring stays."""
    # EXERCISE BEGIN
    # Hint 1: what does twice mean?
    # Hint 2: multiply by 2
    # and return it.
    y = x * 2
    return y
    # EXERCISE END


print("top level stays")'''


def test_stub_source_keeps_signature_docstring_and_points_to_the_hints():
    out = stub_source(SOLUTION)
    assert 'def f(x):\n    """Docstring stays."""\n    ' + STUCK + "\n    " + STUB in out
    assert "y = x * 2" not in out and "EXERCISE" not in out and "Hint" not in out
    assert 'print("top level stays")' in out
    ns = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError):
        ns["f"](1)


def test_hints_at_two_depths_and_the_solution_fold_out_below_the_exercise_cell():
    [region] = exercise_regions(SOLUTION)
    assert region.function == "f" and region.hints == {1: "what does twice mean?", 2: "multiply by 2 and return it."}
    assert region.code == ["y = x * 2", "return y"] and not region.unmarked
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("**Exercise 1** (difficulty 1, about 5 min)"), nbformat.v4.new_code_cell(SOLUTION),
                nbformat.v4.new_code_cell("check(f)")]
    ex = exercise_notebook(nb, "demo")
    code, hints, after = ex.cells[1:]
    assert STUB in code.source and after.source == "check(f)" and HINTS_TAG in hints.metadata.tags
    blocks = re.findall(r"<details[^>]*><summary>(.*?)</summary>\n\n(.*?)\n\n</details>", hints.source, re.S)
    assert [b[0] for b in blocks] == ["Hint 1", "Hint 2", "Solution: the body of <code>f</code>"]
    assert blocks[1][1] == "multiply by 2 and return it." and "y = x * 2\nreturn y" in blocks[2][1]
    assert hints.id == code.id[:56] + "-hints"
    # on the site: the hints (no solution text) before the solution cell, whose code is folded; idempotent
    site = fold_exercises(fold_exercises(copy.deepcopy(nb)))
    assert [c.cell_type for c in site.cells] == ["markdown", "markdown", "code", "code"]
    assert "Hint 2" in site.cells[1].source and "Solution" not in site.cells[1].source
    assert "hide-input" in site.cells[2].metadata.tags and site.cells[2].metadata.mystnb.code_prompt_show == "Solution: the code of f"
    # older notebooks: a bare '# Hint:' is the first hint, a second one continues it
    [old] = exercise_regions("def g():\n    # EXERCISE BEGIN\n    # Hint: a\n    # Hint: b\n    return 1\n    # EXERCISE END")
    assert old.hints == {1: "a b"}


def test_hint_rules_name_what_is_missing():
    one = "def g():\n    # EXERCISE BEGIN\n    # Hint 1: a\n    return 1\n    # EXERCISE END"
    assert any("no '# Hint 2:'" in p and "`g`" in p for p in hint_problems(one, "x"))
    bare = "def g():\n    # EXERCISE BEGIN\n    # note\n    # Hint 2: b\n    return 1\n    # EXERCISE END"
    assert any("without a '# Hint N:' marker" in p for p in hint_problems(bare, "x"))
    assert hint_problems(SOLUTION, "x") == []
    with pytest.raises(ExerciseMarkupError, match="two '# Hint 2:'"):
        exercise_regions("def g():\n    # EXERCISE BEGIN\n    # Hint 2: a\n    # Hint 2: b\n    return 1\n    # EXERCISE END")


def test_exercise_headers_are_checked(tmp_path):
    (tmp_path / "solutions").mkdir()
    path = tmp_path / "solutions" / "demo.ipynb"

    def write(*headers):
        nb = nbformat.v4.new_notebook()
        for h in headers:
            nb.cells += [nbformat.v4.new_markdown_cell(h), nbformat.v4.new_code_cell(SOLUTION)]
        nbformat.write(nb, path)
        return exercise_problems(path)

    assert write("**Exercise 1** (difficulty 1, about 5 min)", "**Exercise 2** (difficulty 3, about 30 min)") == []
    assert write("**Exercise 1** (difficulty 1, about 5 min)", "**Exercise 1b** (difficulty 2, about 5 min)") == []
    assert any("0 headers" in p or "1 headers" in p for p in write("**Exercise 1** (difficulty 1)", "**Exercise 2**"))
    assert any("in order" in p for p in write("**Exercise 1** (difficulty 1, about 5 min)", "**Exercise 3** (difficulty 1, about 5 min)"))
    assert any("two exercises numbered 1" in p
               for p in write("**Exercise 1** (difficulty 1, about 5 min)", "**Exercise 1** (difficulty 1, about 5 min)"))


@pytest.mark.parametrize("bad, msg", [
    ("# EXERCISE BEGIN\nx = 1\n# EXERCISE END", "top level"),
    ("def f():\n    # EXERCISE BEGIN\n    return 1\n", "no '# EXERCISE END'"),
    ("def f():\n    return 1\n    # EXERCISE END", "without a BEGIN"),
    ("def f():\n    # EXERCISE BEGIN\n    # EXERCISE BEGIN\n    return 1\n    # EXERCISE END", "nested"),
    ("if True:\n    # EXERCISE BEGIN\n    x = 1\n    # EXERCISE END", "top level"),
])
def test_bad_markup_is_rejected(bad, msg):
    with pytest.raises(ExerciseMarkupError, match=msg):
        stub_source(bad)


def test_repository_passes_check():
    assert problems() == []


@pytest.fixture
def repo_copy(tmp_path):
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    for folder in ("solutions", "notebooks", "book"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    assert problems(tmp_path) == []
    return tmp_path


def _edit(path, fn):
    nb = nbformat.read(path, as_version=4)
    fn(nb)
    nbformat.write(nb, path)


def test_check_catches_each_rule(repo_copy):
    sol = repo_copy / "solutions" / "00_orientation.ipynb"
    ex = repo_copy / "notebooks" / "00_orientation.ipynb"

    def edit_solution_code(nb):
        cell = next(c for c in nb.cells if "# EXERCISE BEGIN" in c.source)
        cell.source = cell.source.replace('"layers.', '"layers.') + "\n# changed"

    _edit(sol, edit_solution_code)
    assert any("stale" in p for p in problems(repo_copy))
    generate(repo_copy)
    assert problems(repo_copy) == []

    _edit(ex, lambda nb: nb.cells[3].update(outputs=[nbformat.v4.new_output("stream", text="x")]))
    assert any("has outputs" in p for p in problems(repo_copy))
    generate(repo_copy)

    _edit(sol, lambda nb: nb.metadata.kernelspec.update(name="julia"))
    assert any("kernelspec is not python3" in p for p in problems(repo_copy))
    _edit(sol, lambda nb: nb.metadata.kernelspec.update(name="python3"))

    def untag_parameters(nb):
        for c in nb.cells:
            if "parameters" in c.metadata.get("tags", []):
                c.metadata["tags"] = []
    _edit(sol, untag_parameters)
    assert any("no code cell tagged 'parameters'" in p for p in problems(repo_copy))


def test_check_catches_edited_setup_cell(repo_copy):
    sol = repo_copy / "solutions" / "00_orientation.ipynb"

    def edit_setup(nb):
        cell = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
        cell.source += "\nprint('hi')"
    _edit(sol, edit_setup)
    assert any("setup cell differs" in p for p in problems(repo_copy))
    generate(repo_copy)  # the tooling restores the standard cell
    assert problems(repo_copy) == []

    def drop_setup(nb):
        nb.cells = [c for c in nb.cells if "setup" not in c.metadata.get("tags", [])]
    _edit(sol, drop_setup)
    assert any("no standard setup cell" in p for p in problems(repo_copy))


def test_setup_cell_is_identical_everywhere():
    src = setup_cell_source()
    for path in [*sorted((REPO_ROOT / "solutions").glob("*.ipynb")), *sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))]:
        nb = nbformat.read(path, as_version=4)
        assert [c.source for c in nb.cells if "setup" in c.metadata.get("tags", [])] == [src], path


# The setup cell's behaviour in Colab and locally: tests/test_setup_cell.py.


def _course(*args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "-m", "utils.course", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("args, msg", [
    (["run", "--profile", "turbo", "00"], "unknown profile 'turbo'"),
    (["run", "--profile", "smoke", "99_nothing"], "unknown chapter '99_nothing'"),
    (["frobnicate"], "invalid choice"),
])
def test_runner_bad_input_is_one_line_exit_2(args, msg):
    proc = _course(*args)
    assert proc.returncode == 2
    assert msg in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_runner_executes_with_papermill_and_reports(tmp_path):
    from utils.course.run import run

    src = tmp_path / "src"
    src.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("PROFILE = 'cpu'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import numpy as np\nx = np.ones(10**6)\nprint('profile', PROFILE)"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, src / "good.ipynb")
    nb.cells.append(nbformat.v4.new_code_cell("assert PROFILE == 'cpu', 'boom'"))
    nbformat.write(nb, src / "bad.ipynb")
    results = run(["good", "bad"], "smoke", build_dir=tmp_path / "build", src_dir=src)
    good, bad = results
    assert good.status == "ok" and bad.status == "failed" and "boom" in bad.error
    assert good.seconds > 0 and good.peak_mem_mb > 10
    executed = nbformat.read(tmp_path / "build" / "executed" / "good.ipynb", as_version=4)
    assert "profile smoke" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    report = json.loads((tmp_path / "build" / "run_report.json").read_text())
    assert report["good:smoke"]["status"] == "ok" and report["bad:smoke"]["status"] == "failed"


def test_clean_streams_keeps_final_progress_state(tmp_path):
    from utils.course.run import clean_streams

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rbar 0%"),
                           nbformat.v4.new_output("stream", name="stderr", text="\rbar 50%"),
                           nbformat.v4.new_output("stream", name="stderr", text="\rbar 100%\n"),
                           nbformat.v4.new_output("stream", name="stdout", text="done\n")]
    nbformat.write(nb, tmp_path / "a.ipynb")
    clean_streams(tmp_path / "a.ipynb")
    outs = nbformat.read(tmp_path / "a.ipynb", as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outs] == [("stderr", "bar 100%\n"), ("stdout", "done\n")]
