"""How the site presents the notebooks: the generator folds the plumbing cells behind
one-line captions, `check` flags unfolded cells and (as warnings, until LONG_LINES_FAIL)
long code lines, and the site's pinned MathJax copy is fetched, verified and unpacked."""
import importlib.util
import io
import shutil
import tarfile

import nbformat
import pytest

from utils.course import REPO_ROOT
from utils.course import check
from utils.course.notebooks import FOLD_CAPTIONS, FOLD_TAG, exercise_notebook, fold_plumbing, generate, is_folded


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def _code(src, *tags):
    return nbformat.v4.new_code_cell(src, metadata={"tags": list(tags)} if tags else {})


def test_fold_plumbing_tags_setup_and_parameters_with_captions():
    nb = _nb(nbformat.v4.new_markdown_cell("# Title"), _code("# setup", "setup"), _code("PROFILE = 'cpu'", "parameters"),
             _code('# Parameters\nPROFILE = "smoke"\n', "injected-parameters"), _code("x = 1"))
    fold_plumbing(nb)
    fold_plumbing(nb)  # idempotent
    setup, params, injected, plain = nb.cells[1:]
    for cell in (setup, params, injected):
        assert cell.metadata.tags.count(FOLD_TAG) == 1 and is_folded(cell)
        caption = cell.metadata.mystnb.code_prompt_show
        assert "\n" not in caption and len(caption) <= 80, caption  # one line on the folded cell
    assert setup.metadata.tags == ["setup", FOLD_TAG] and setup.metadata.mystnb.code_prompt_show == FOLD_CAPTIONS["setup"]
    assert "'smoke'" in injected.metadata.mystnb.code_prompt_show  # says which profile the page ran with
    assert "tags" not in plain.metadata and "mystnb" not in plain.metadata and not is_folded(plain)
    assert [c.source for c in nb.cells] == ["# Title", "# setup", "PROFILE = 'cpu'", '# Parameters\nPROFILE = "smoke"\n', "x = 1"]
    ex = exercise_notebook(nb, "demo")  # the exercise notebook keeps the fold
    assert is_folded(ex.cells[1]) and is_folded(ex.cells[2])


@pytest.fixture
def repo_copy(tmp_path):
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    for folder in ("solutions", "notebooks", "book"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    generate(tmp_path)
    return tmp_path


def test_generated_notebooks_are_folded_and_check_catches_an_unfolded_cell(repo_copy):
    for path in [*repo_copy.glob("solutions/*.ipynb"), *repo_copy.glob("notebooks/*.ipynb")]:
        nb = nbformat.read(path, as_version=4)
        plumbing = [c for c in nb.cells if {"setup", "parameters"} & set(c.metadata.get("tags", []))]
        assert len(plumbing) == 2 and all(is_folded(c) for c in plumbing), path
    assert not [p for p in check.problems(repo_copy) if "folded" in p]
    sol = repo_copy / "solutions" / "00_orientation.ipynb"
    nb = nbformat.read(sol, as_version=4)
    cell = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
    cell.metadata.tags.remove(FOLD_TAG)
    nbformat.write(nb, sol)
    assert any("00_orientation.ipynb: the setup cell is not folded" in p for p in check.problems(repo_copy))
    generate(repo_copy)  # the generator folds it again
    assert not [p for p in check.problems(repo_copy) if "folded" in p]


def test_long_lines_are_listed_and_warn_until_the_rule_is_flipped(repo_copy, monkeypatch, capsys):
    sol = repo_copy / "solutions" / "00_orientation.ipynb"
    nb = nbformat.read(sol, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and not c.metadata.get("tags"))
    nb.cells[i].source = "x = 1\ny = '" + "a" * 200 + "'"
    nbformat.write(nb, sol)
    found = check.long_lines(repo_copy, limit=100)
    assert f"solutions/00_orientation.ipynb cell {i} line 2: 206 characters (limit 100)" in found
    assert not check.long_lines(repo_copy, limit=10_000)
    capsys.readouterr()
    monkeypatch.setattr(check, "LONG_LINES_FAIL", False)
    assert not [p for p in check.problems(repo_copy) if "characters (limit" in p]
    assert "warning: solutions/00_orientation.ipynb:" in capsys.readouterr().err
    monkeypatch.setattr(check, "LONG_LINES_FAIL", True)
    assert f"solutions/00_orientation.ipynb cell {i} line 2: 206 characters (limit 100)" in check.problems(repo_copy)


# --- the offline MathJax copy (book/_ext/site_assets.py) ---------------------------------

def _site_assets():
    spec = importlib.util.spec_from_file_location("site_assets", REPO_ROOT / "book" / "_ext" / "site_assets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tarball(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_mathjax_copy_is_verified_and_trimmed(tmp_path, monkeypatch):
    sa = _site_assets()
    import base64
    import hashlib
    data = _tarball({"package/es5/tex-mml-chtml.js": b"mj", "package/es5/output/chtml/fonts/woff-v2/a.woff": b"f",
                     "package/es5/tex-svg-full.js": b"unused", "package/es5/../../evil.js": b"x", "package/LICENSE": b"l"})
    (tmp_path / f"mathjax-{sa.MATHJAX_VERSION}.tgz").write_bytes(data)

    def no_network(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(sa.urllib.request, "urlopen", no_network)
    # the cached tarball does not match the pinned integrity, and the registry is unreachable
    with pytest.raises(sa.ExtensionError, match="npm pack mathjax@"):
        sa.mathjax_static_dir(tmp_path)
    monkeypatch.setattr(sa, "MATHJAX_INTEGRITY", "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode())
    static = sa.mathjax_static_dir(tmp_path)
    files = sorted(p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file())
    assert files == ["mathjax/LICENSE", "mathjax/output/chtml/fonts/woff-v2/a.woff", "mathjax/tex-mml-chtml.js"]
    assert not list(tmp_path.parent.rglob("evil.js"))
    assert sa.mathjax_static_dir(tmp_path) == static  # cached: no second unpack


def test_pinned_mathjax_integrity_matches_the_npm_lockfile_format():
    sa = _site_assets()
    algo, _, digest = sa.MATHJAX_INTEGRITY.partition("-")
    assert algo == "sha512" and len(digest) == 88
    assert sa.MATHJAX_TARBALL == f"https://registry.npmjs.org/mathjax/-/mathjax-{sa.MATHJAX_VERSION}.tgz"
