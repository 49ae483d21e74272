"""The first ten minutes: the Colab setup cell (idempotent clone, runtime packages pinned with
torch held, one-line failures), the gpu-profile pre-check, and the Makefile's .venv."""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from utils import CourseError
from utils.course import REPO_ROOT
from utils.course.run import _code_cells, _imported_names, used_modules
from utils.course.setup_cell import (COLAB_REQUIREMENTS, COLAB_SKIP, colab_install, install_command, installed_version,
                                     read_pins, setup_cell_source)

# imported at run time but not pinned by the course: the kernel itself, and a dependency of pinned packages
PROVIDED = {"IPython": "the notebook kernel", "scipy": "a dependency of sae_lens, trl and stable-baselines3",
            "torch": "Colab's own build", "pandas": "a dependency of datasets (and preinstalled in Colab)",
            "huggingface_hub": "a dependency of transformers, datasets and sae_lens",
            "safetensors": "a dependency of transformers and sae_lens",
            "packaging": "a dependency of transformers (setup_cell.py compares versions with it, or pip's copy)",
            "pip": "the installer itself (setup_cell.py falls back to its copy of packaging)"}
COURSE_FILES = ("utils", "data", "notebooks", "solutions", "requirements.txt", COLAB_REQUIREMENTS, "_config.yml")


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def test_colab_requirements_are_the_runtime_imports_pinned_as_in_requirements_txt():
    """Each line is requirements.txt's exact pin, or, for a package Colab ships, a compatible range
    from that pin (the lower bound) to the next major version (0.x: the next minor)."""
    import importlib.metadata as md

    from packaging.version import Version

    full = {_norm(p.split("==")[0]): p.split("==")[1] for p in read_pins(REPO_ROOT / "requirements.txt")}
    colab, ranged = {}, set()
    for line in read_pins(REPO_ROOT / COLAB_REQUIREMENTS):
        exact = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
        ranged_ = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=([0-9.]+),<([0-9.]+)", line)
        assert exact or ranged_, f"{COLAB_REQUIREMENTS}: {line!r} is neither name==pin nor name>=pin,<next-major"
        name, low = _norm((exact or ranged_).group(1)), (exact or ranged_).group(2)
        assert full.get(name) == low, f"{COLAB_REQUIREMENTS}: {line!r} does not start at requirements.txt's pin"
        if ranged_:
            lo, hi = Version(low), Version(ranged_.group(3))
            nxt = (lo.major + 1, 0) if lo.major else (0, lo.minor + 1)
            assert (hi.major, hi.minor) == nxt and hi.micro == 0, f"{line!r}: the upper bound is the next major"
            ranged.add(name)
        colab[name] = low
    # Colab's newer versions of these were downgraded by exact pins (issue 39): they must be ranges
    assert {_norm(n) for n in COLAB_SHIPS} <= ranged
    assert not set(colab) & {_norm(s) for s in COLAB_SKIP}

    names: set[str] = set()
    for nb in sorted((REPO_ROOT / "solutions").glob("*.ipynb")):
        names |= {n for src in _code_cells(nb) for n in _imported_names(src)}
        names |= {n for path in used_modules(nb).values() for n in _imported_names(path.read_text())}
    tops = {n.split(".")[0] for n in names if n} - set(sys.stdlib_module_names) - {"utils", "__future__"}
    dists = md.packages_distributions()
    # a module several distributions provide (mujoco: mujoco, mujoco-core, mujoco-studio) counts as the
    # one requirements.txt pins
    needed = {next((_norm(d) for d in dists[t] if _norm(d) in full), _norm(dists[t][0]))
              for t in tops - set(PROVIDED)}
    assert needed == set(colab), (f"imported at run time but not in {COLAB_REQUIREMENTS}: {sorted(needed - set(colab))}; "
                                  f"listed but not imported: {sorted(set(colab) - needed)}")


@pytest.fixture(scope="module")
def course_repo(tmp_path_factory):
    """A git repository (branch main) of the working tree's course files: what Colab clones."""
    origin = tmp_path_factory.mktemp("origin") / "course"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *COURSE_FILES],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, listed):
        if (REPO_ROOT / rel).is_file():
            (origin / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, origin / rel)
    (origin / ".gitignore").write_text("_build/\n__pycache__/\n")
    git = ["git", "-c", "user.name=course", "-c", "user.email=course@example.invalid"]
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *cmd], cwd=origin, check=True)
    return origin


def _cell(repo: Path, colab_root: Path):
    """The setup cell's definitions, with the clone URL pointed at `repo`."""
    ns = {}
    src = setup_cell_source().replace("COURSE_ROOT = course_setup()", "")
    exec(src.replace('COURSE_REPO = "', f'COURSE_REPO = "{repo}"  # "'), ns)
    return lambda **kw: _keep_path(ns["course_setup"], in_colab=True, colab_root=str(colab_root), **kw)


def _keep_path(fn, **kw):
    old = list(sys.path)
    try:
        return fn(**kw)
    finally:
        sys.path[:] = old


def test_clone_is_reused_when_complete_replaced_when_not_and_a_failure_is_one_line(course_repo, tmp_path, capsys):
    root = tmp_path / "content" / "rl-interp-course"
    setup = _cell(course_repo, root)
    assert setup() == root and (root / "utils" / "course" / "setup_cell.py").is_file()
    assert INSTALLED in capsys.readouterr().out  # every runtime requirement is met here
    (root / "notes.txt").write_text("mine")
    (root / "utils" / "stats.py").write_text((root / "utils" / "stats.py").read_text() + "# a learner's edit\n")

    setup()  # a complete clone is reused: the learner's files stay
    assert (root / "notes.txt").read_text() == "mine"

    (root / "utils" / "core.py").unlink()  # a checkout that stopped part way
    setup()
    assert (root / "utils" / "core.py").is_file() and not (root / "notes.txt").exists()

    shutil.rmtree(root)
    (root / ".git").mkdir(parents=True)  # a clone interrupted before it fetched anything
    setup()
    assert (root / "utils" / "course").is_dir()

    shutil.rmtree(root)
    with pytest.raises(RuntimeError) as err:
        _cell(tmp_path / "no-such-repo", root)()
    msg = str(err.value)
    assert msg.startswith("course setup: could not clone") and "run this cell again" in msg and "\n" not in msg
    assert not root.exists() and not root.with_name(root.name + ".partial").exists()


def test_setup_cell_locally_runs_no_command(tmp_path, monkeypatch):
    ns = {}
    exec(setup_cell_source().replace("COURSE_ROOT = course_setup()", ""), ns)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    monkeypatch.chdir(REPO_ROOT / "solutions")
    assert _keep_path(ns["course_setup"], in_colab=False) == REPO_ROOT
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="utils/ not found"):
        _keep_path(ns["course_setup"], in_colab=False)


def _fake_root(tmp_path: Path, pins: str) -> Path:
    root = tmp_path / "clone"
    root.mkdir(parents=True)
    (root / COLAB_REQUIREMENTS).write_text(pins)
    return root


def test_colab_install_holds_torch_and_installs_only_the_runtime_pins(tmp_path):
    root = _fake_root(tmp_path, "numpy==0.0.1  # not what is installed\ntqdm==" + installed_version("tqdm") + "\n")
    calls = []
    missing = colab_install(root, run=lambda cmd, **kw: calls.append(cmd) or SimpleNamespace(returncode=0), write=print)
    assert missing == ["numpy==0.0.1"]
    (cmd,) = calls
    assert cmd == install_command(root, root / "_build" / "colab-constraints.txt")
    assert cmd[:5] == [sys.executable, "-m", "pip", "install", "-q"] and cmd[-2:] == read_pins(root / COLAB_REQUIREMENTS)
    assert Path(cmd[cmd.index("-c") + 1]).read_text() == f"torch=={installed_version('torch')}\n"

    # nothing missing: no pip at all (a re-run, or a runtime that already has everything)
    root2 = _fake_root(tmp_path / "b", f"tqdm=={installed_version('tqdm')}\n")
    assert colab_install(root2, run=lambda *a, **k: pytest.fail("pip ran"), write=print) == []


@pytest.mark.parametrize("stderr, hint", [
    ("ERROR: Cannot install trl==1.16.0 because these package versions have conflicting dependencies (torch)",
     "a pin needs a torch other than"),
    ("ERROR: Could not find a version that satisfies the requirement numpy==0.0.1", "internet access"),
])
def test_colab_install_failure_is_one_line(tmp_path, stderr, hint):
    root = _fake_root(tmp_path, "numpy==0.0.1\n")
    fail = lambda cmd, **kw: SimpleNamespace(returncode=1, stdout="", stderr=f"Collecting x\n{stderr}\n")  # noqa: E731
    with pytest.raises(RuntimeError) as err:
        colab_install(root, run=fail, write=print)
    assert hint in str(err.value) and stderr[:60] in str(err.value) and "\n" not in str(err.value)


def test_colab_install_says_when_a_restart_is_needed(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "fakecourse_pkg").mkdir(parents=True)
    (site / "fakecourse_pkg" / "__init__.py").write_text("")

    def dist(version):
        shutil.rmtree(next(site.glob("*.dist-info"), site / "none"), ignore_errors=True)
        info = site / f"fakecourse_pkg-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakecourse-pkg\nVersion: {version}\n")
        (info / "top_level.txt").write_text("fakecourse_pkg\n")

    dist("1.0")
    monkeypatch.syspath_prepend(str(site))
    import fakecourse_pkg  # noqa: F401  (imported before the install, as Colab has numpy imported)

    try:
        root = _fake_root(tmp_path, "fakecourse-pkg==2.0\n")
        with pytest.raises(RuntimeError) as err:
            colab_install(root, run=lambda cmd, **kw: dist("2.0") or SimpleNamespace(returncode=0), write=print)
        msg = str(err.value)
        assert "fakecourse-pkg 1.0 -> 2.0" in msg and "Restart session" in msg and "\n" not in msg
        assert colab_install(root, run=lambda *a, **k: pytest.fail("pip ran"), write=print) == []  # the re-run
    finally:
        sys.modules.pop("fakecourse_pkg", None)


def _colab_venv(path: Path) -> Path:
    """A fresh venv playing Colab's Python: its own site-packages first (what pip installs there,
    like Colab's newer packages), then the running interpreter's site directories through a .pth
    file (Colab's preinstalled packages). Unlike `venv --system-site-packages`, which would show
    the *base* interpreter's packages when the suite runs inside a venv, this sees exactly what
    the suite's own Python sees, wherever its packages were installed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    (site,) = path.glob("lib/python3*/site-packages")
    dirs = [d for d in dict.fromkeys(sys.path) if d.rstrip("/").endswith(("site-packages", "dist-packages"))
            and Path(d).is_dir() and Path(d).resolve() != site.resolve()]
    assert dirs, f"no site directory on the running interpreter's path: {sys.path}"
    (site / "_course_base.pth").write_text("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
    return path


def _colab_cells(course_repo: Path, clone: Path, n: int = 4) -> list[str]:
    """The exercise notebook's first code cells (setup, parameters, imports, first training), the
    setup cell pointed at the local `course_repo` and cloning into `clone`."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / "00_orientation.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code"][:n]
    assert "google.colab" in cells[0] and 'colab_root="/content/rl-interp-course"' in cells[0]
    cells[0] = (cells[0].replace('COURSE_REPO = "', f'COURSE_REPO = "{course_repo}"  # "')
                .replace('colab_root="/content/rl-interp-course"', f'colab_root="{clone}"'))
    return cells


def _colab_script(cells: list[str], clone: Path, before: str = "") -> str:
    """A script that runs `cells` as Colab would: google.colab importable (a stub on PYTHONPATH),
    `before` first (what Colab's kernel has imported at start), then each cell in one namespace."""
    return textwrap.dedent(f"""
        import json, sys, time
        {before}
        import google.colab  # the stub: the cell now believes it runs in Colab
        ns = {{"__name__": "__main__"}}
        for i, src in enumerate(json.loads({json.dumps(json.dumps(cells))})):
            t0 = time.time()
            exec(compile(src, f"cell{{i}}", "exec"), ns)
            print(f"cell {{i}} ran in {{time.time() - t0:.1f}} s")
        assert sys.prefix != sys.base_prefix and ns["COURSE_ROOT"] == __import__("pathlib").Path({str(clone)!r})
    """)


def _pip_dry_run(clone: Path) -> str:
    """A script printing what the setup cell's pip command would do here (--dry-run, no index)."""
    return textwrap.dedent(f"""
        import importlib.util, subprocess, sys
        from pathlib import Path
        root = Path({str(clone)!r})
        spec = importlib.util.spec_from_file_location("installer", root / "utils/course/setup_cell.py")
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        (root / "_build").mkdir(exist_ok=True)
        (root / "_build" / "colab-constraints.txt").write_text(f"torch=={{m.installed_version('torch')}}\\n")
        cmd = m.install_command(root, root / "_build" / "colab-constraints.txt")
        out = subprocess.run(cmd[:4] + ["--no-index", "--dry-run"] + cmd[5:], capture_output=True, text=True)
        print("pip exit", out.returncode, out.stdout[-3000:], out.stderr[-1000:])
        sys.exit(out.returncode)
    """)


class _Colab:
    """Runs code in the simulated Colab venv, with the google.colab stub and the hub offline."""

    def __init__(self, venv: Path, tmp_path: Path, offline_pip: bool = True):
        stub = tmp_path / "stub"
        (stub / "google" / "colab").mkdir(parents=True, exist_ok=True)
        (stub / "google" / "colab" / "__init__.py").write_text("")
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_NO_INDEX")}
        self.env.update(PYTHONPATH=str(stub), COURSE_PROFILE="smoke", MPLBACKEND="Agg", HF_HUB_OFFLINE="1")
        if offline_pip:
            self.env["PIP_NO_INDEX"] = "1"
        self.py, self.cwd = str(venv / "bin" / "python"), tmp_path

    def __call__(self, code: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        done = subprocess.run([self.py, "-c", code], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert not check or done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    def versions(self, *names: str) -> dict[str, str]:
        code = f"import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {list(names)!r}}}))"
        return json.loads(self(code).stdout.strip().splitlines()[-1])


INSTALLED = "packages are installed at compatible versions"


def test_colab_simulation_in_a_fresh_venv(course_repo, tmp_path):
    """The pinned end: a venv that plays Colab with the running interpreter's packages (the pins)
    preinstalled, a google.colab stub, the course cloned from a local URL. The exercise notebook's
    setup cell runs (and runs again), its pip command resolves offline, and the first sections run."""
    clone = tmp_path / "content" / "course"
    colab = _Colab(_colab_venv(tmp_path / "colab"), tmp_path)
    cells = _colab_cells(course_repo, clone)
    out = colab(_colab_script(cells, clone)).stdout
    assert INSTALLED in out and f"cell {len(cells) - 1} ran" in out
    assert (clone / ".git").is_dir() and not clone.with_name("course.partial").exists()
    assert INSTALLED in colab(_colab_script(cells[:1], clone)).stdout  # re-running the cell reuses the clone
    # the pip command the cell would run when a requirement is missing: resolves with torch held, no network
    assert "pip exit 0" in colab(_pip_dry_run(clone)).stdout


# What a fresh Colab runtime ships today, newer than requirements.txt's pins (the issue that found
# the downgrades: numpy 2.5.5 -> 2.4.6, transformers 5.25.0 -> 5.23.0, PyYAML 6.0.4 -> 6.0.3).
COLAB_SHIPS = {"numpy": "2.5.5", "transformers": "5.25.0", "PyYAML": "6.0.4"}


def _give_colab_its_versions(colab: _Colab, site: Path) -> dict[str, str]:
    """Install COLAB_SHIPS into the Colab venv from PyPI (with what they need, e.g. transformers
    5.25's `kernels`). A version PyPI does not have (numpy 2.5.5, when this was written: 2.4.6 is
    its newest) gets that version's metadata over the installed code instead, which is what pip
    and the setup cell read. Returns {package: "pypi" | "metadata"}. Skips (CI: fails) offline."""
    how = {}
    for name, version in COLAB_SHIPS.items():
        done = colab(f"import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-m', 'pip', 'install', "
                     f"'--disable-pip-version-check', '{name}=={version}']).returncode)", check=False, timeout=900)
        if done.returncode == 0:
            how[name] = "pypi"
            continue
        log = done.stdout + done.stderr
        if "No matching distribution found" in log and "(from versions:" in log and "none)" not in log:
            dist = site / f"{name.lower()}-{version}.dist-info"   # PyPI answered, without this version
            dist.mkdir()
            (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            (dist / "INSTALLER").write_text("course-test\n")
            (dist / "RECORD").write_text(f"{dist.name}/METADATA,,\n{dist.name}/INSTALLER,,\n{dist.name}/RECORD,,\n")
            how[name] = "metadata"
            continue
        msg = f"this test installs Colab's versions from PyPI, which is unreachable here: {log.strip()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return how


def test_colab_with_its_newer_packages_downgrades_nothing_and_needs_no_restart(course_repo, tmp_path):
    """The other end: Colab's own newer numpy, transformers and PyYAML (COLAB_SHIPS), imported by
    the kernel before the setup cell runs. The cell keeps them (requirements-colab.txt gives them
    ranges), asks for no restart, pip's resolution of its command changes none of them, and when a
    course package is missing (circuitsvis here) the cell installs it and still moves none of them.
    The course's own LM code then runs on Colab's transformers. Needs PyPI (skipped offline; CI has it)."""
    venv = _colab_venv(tmp_path / "colab")
    (site,) = venv.glob("lib/python3*/site-packages")
    online = _Colab(venv, tmp_path, offline_pip=False)
    how = _give_colab_its_versions(online, site)
    names = list(COLAB_SHIPS)
    assert online.versions(*names) == COLAB_SHIPS, how
    clone = tmp_path / "content" / "course"
    cells = _colab_cells(course_repo, clone, n=1)
    kernel = "import numpy, yaml, transformers  # what Colab's kernel has loaded when the cell runs"

    out = online(_colab_script(cells, clone, before=kernel)).stdout
    assert INSTALLED in out and "restart" not in out.lower()
    assert online.versions(*names) == COLAB_SHIPS
    dry = online(_pip_dry_run(clone)).stdout
    would = next((line for line in dry.splitlines() if line.startswith("Would install")), "")
    assert "pip exit 0" in dry and not any(n.lower() in would.lower() for n in names), would

    # a course package Colab lacks: circuitsvis "0.0.1" (metadata only) makes its requirement unmet
    fake = site / "circuitsvis-0.0.1.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: circuitsvis\nVersion: 0.0.1\n")
    (fake / "RECORD").write_text(f"{fake.name}/METADATA,,\n{fake.name}/RECORD,,\n")
    done = online(_colab_script(cells, clone, before=kernel), check=False, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "installing 1 package(s) (circuitsvis)" in out, out[-3000:]
    assert "installed 1 package(s)" in out and "restart" not in out.lower()
    assert online.versions(*names, "circuitsvis") == {**COLAB_SHIPS, "circuitsvis": installed_version("circuitsvis")}

    # the course's LM code on Colab's transformers: an embedded model in both forms, one forward pass
    lm_check = online(textwrap.dedent(f"""
        import sys, torch, transformers
        sys.path.insert(0, {str(clone)!r})
        from utils.lm import load_model
        lm = load_model("tiny-reviews")
        ids = lm.tl.to_tokens(["the movie was great"])
        hf = lm.hf(input_ids=ids).logits.float().log_softmax(-1)   # TransformerLens centres the logits
        assert torch.allclose(lm.tl(ids).float().log_softmax(-1), hf, atol=1e-4)
        print("transformers", transformers.__version__, "ok")
    """))
    assert f"transformers {COLAB_SHIPS['transformers']} ok" in lm_check.stdout


# ---------------------------------------------------------------- the gpu profile's pre-check

@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """gpu_check with the hub client faked: no token unless HF_TOKEN is set, and any call to the
    hub's auth-check endpoint fails the test unless a test fakes it."""
    import huggingface_hub

    from utils.course import gpu_check

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda *a, **k: pytest.fail(f"asked the hub: {a}"))
    return gpu_check


def _gpu(monkeypatch, gpu_check, gib):
    monkeypatch.setattr(gpu_check, "gpu_memory_gib", lambda: None if gib is None else ("Tesla T4", gib))


def test_gpu_check_only_in_the_gpu_profile_and_one_line_with_what_to_do(no_hub, monkeypatch):
    import huggingface_hub

    check = no_hub.check_gpu_profile
    _gpu(monkeypatch, no_hub, None)
    check("cpu", ["google/gemma-2-2b"], gpu_gib=14)
    check("smoke", ["google/gemma-2-2b"], gpu_gib=14)
    cases = [
        (None, {}, "needs a CUDA GPU with about 14 GiB: in Colab choose Runtime > Change runtime type"),
        (8.0, {}, "needs about 14 GiB of GPU memory and this Tesla T4 has 8.0 GiB"),
        (14.56, {}, "google/gemma-2-2b, a gated model, and this session has no Hugging Face token"),
        (14.56, {"HF_HUB_OFFLINE": "1"}, "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"),
    ]
    for gib, env, msg in cases:
        _gpu(monkeypatch, no_hub, gib)
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            with pytest.raises(CourseError) as err:
                check("gpu", ["google/gemma-2-2b"], gpu_gib=14)
        assert msg in str(err.value) and 'PROFILE = "cpu"' in str(err.value) and "\n" not in str(err.value)
    _gpu(monkeypatch, no_hub, 14.56)
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda repo, token=None: None)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    check("gpu", ["google/gemma-2-2b"], gpu_gib=14)  # a token with access, enough memory: go
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda *a, **k: pytest.fail("asked the hub"))
    check("gpu", ["gpt2"], gpu_gib=8)  # not gated: downloads without a token, no question to the hub
    monkeypatch.setattr(no_hub, "is_cached", lambda repo: True)
    check("gpu", ["google/gemma-2-2b"], gpu_gib=14)  # already downloaded: no token needed


def _hub_error(cls, status: int):
    """A huggingface_hub HTTP error as its client raises it (a fake response, no network)."""
    response = SimpleNamespace(status_code=status, headers={}, request=None, url="https://huggingface.co/api")
    return cls(f"{status} Client Error", response=response)


def test_gated_model_check_tells_no_token_no_licence_and_ok_apart(no_hub, monkeypatch, capsys):
    """The three cases of chapter 04's gpu profile, with the hub client faked: each is one line
    that says what to do. No token: notebook_login() (no restart), and that a Colab secret added
    mid-session needs a restart. A token whose account has not accepted the licence: the licence
    page, before any download. Access: the chapter goes on, saying so."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    repo, asked = "google/gemma-2-2b", []
    _gpu(monkeypatch, no_hub, 14.56)

    def hub_says(error):
        def auth_check(repo_id, token=None, **kw):
            asked.append((repo_id, token))
            if error is not None:
                raise error
        monkeypatch.setattr(huggingface_hub, "auth_check", auth_check)

    # 1. no token (no HF_TOKEN, no login, no Colab secret read): the hub is not even asked
    with pytest.raises(CourseError) as err:
        no_hub.check_gpu_profile("gpu", [repo], gpu_gib=14)
    line = str(err.value)
    assert "\n" not in line and "has no Hugging Face token" in line and f"https://huggingface.co/{repo}" in line
    assert "notebook_login()" in line and "no restart needed" in line
    assert "a Colab secret HF_TOKEN added after the session started is read only after Runtime > Restart" in line
    assert 'PROFILE = "cpu"' in line and not asked

    # 2. a token (here from `notebook_login()`'s token file, read by get_token) without the licence
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_login")
    hub_says(_hub_error(GatedRepoError, 403))
    with pytest.raises(CourseError) as err:
        no_hub.check_gpu_profile("gpu", [repo], gpu_gib=14)
    line = str(err.value)
    assert "\n" not in line and "has not accepted its licence" in line and f"https://huggingface.co/{repo}" in line
    assert 'PROFILE = "cpu"' in line and asked == [(repo, "hf_login")]

    # a token the hub refuses (expired, or fine-grained without gated-repo access)
    hub_says(_hub_error(HfHubHTTPError, 401))
    status, line = no_hub.gated_access(repo)
    assert status == "bad-token" and "HTTP 401" in line and "notebook_login()" in line and "\n" not in line
    # no connection: says so, rather than a traceback from deep inside the download
    hub_says(ConnectionError("no route to host"))
    status, line = no_hub.gated_access(repo)
    assert status == "unreachable" and "internet access" in line and 'PROFILE = "cpu"' in line

    # 3. ok: one line, and the chapter goes on
    hub_says(None)
    capsys.readouterr()
    no_hub.check_gpu_profile("gpu", [repo], gpu_gib=14)
    assert capsys.readouterr().out.strip() == f"{repo}: this session's Hugging Face token may download it " \
                                              f"(licence accepted)"


def test_load_model_checks_a_gated_model_before_any_download(no_hub, monkeypatch):
    """load_model('gemma-2-2b') online, not cached, without the licence: the same one line, and
    transformers is never asked to download."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from utils.lm import api

    monkeypatch.setattr(api, "_hub_mode", lambda: True)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_login")
    monkeypatch.setattr(huggingface_hub, "auth_check",
                        lambda *a, **k: (_ for _ in ()).throw(_hub_error(GatedRepoError, 403)))
    monkeypatch.setattr(api.AutoTokenizer, "from_pretrained", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(CourseError, match="has not accepted its licence: accept it at https://huggingface.co/google"):
        api.load_model("gemma-2-2b", device="cpu")


# ---------------------------------------------------------------- the Makefile's Python

def _make(*args, env_extra=None, cwd=REPO_ROOT):
    env = {k: v for k, v in os.environ.items() if k not in ("PY", "VIRTUAL_ENV", "CONDA_PREFIX", "CI", "MAKEFLAGS")}
    env.update(env_extra or {})
    return subprocess.run([shutil.which("make") or "make", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_make_uses_a_venv_unless_one_is_active_or_ci_or_py_is_given(tmp_path):
    for name in ("Makefile", "requirements.txt"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    for extra, args, py in [({}, [], ".venv/bin/python"), ({"VIRTUAL_ENV": "/x"}, [], "python3"),
                            ({"CI": "true"}, [], "python3"), ({}, ["PY=/opt/py"], "/opt/py")]:
        dry = _make("-n", *args, "book", "test", env_extra=extra, cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        assert f"{py} -m utils.course run --profile cpu" in dry.stdout and f"{py} -m pytest" in dry.stdout, (extra, dry.stdout)
        assert ("-m venv .venv" in dry.stdout) == (py == ".venv/bin/python")
        assert f"{py} -m pip install -q -r requirements.txt" in dry.stdout  # once, before the first target needing it
    # every target that runs code installs first, whichever Python (CI's PY=python3 included: its
    # own install ran before, so this one finds everything there)
    for target in ("test", "book", "check", "run", "notebooks", "rehearse"):
        assert "-m pip install -q -r requirements.txt" in _make("-n", target, "PY=python3", cwd=tmp_path).stdout, target


# A stand-in for pip, put into a fresh, empty venv: it logs each call (with the Python's sys.prefix)
# and "installs" stand-ins for pytest and `utils.course` that log their calls, so the Makefile's
# real dependency chain runs offline in seconds.
_FAKE_PIP = """import os, sys
from pathlib import Path
log = Path(os.environ["FAKE_PIP_LOG"])
with log.open("a") as f:
    f.write(f"{sys.prefix} pip {' '.join(sys.argv[1:])}\\n")
if sys.argv[1:2] == ["install"] and "-r" in sys.argv:
    site = Path(__file__).resolve().parent.parent
    for name in ("pytest", "utils.course"):
        d = site.joinpath(*name.split("."))
        d.mkdir(parents=True, exist_ok=True)
        (d / "__init__.py").write_text("")
        (d / "__main__.py").write_text(
            "import os, sys\\nwith open(os.environ['FAKE_PIP_LOG'], 'a') as f:\\n"
            f"    f.write(sys.prefix + ' {name} ' + ' '.join(sys.argv[1:]) + '\\\\n')\\n")
    (site / "utils" / "__init__.py").write_text("")
"""


def _empty_venv(path: Path) -> Path:
    """A fresh venv with nothing installed but the logging pip stand-in."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    (site,) = path.glob("lib/python3*/site-packages")
    (site / "pip").mkdir()
    (site / "pip" / "__init__.py").write_text("")
    (site / "pip" / "__main__.py").write_text(_FAKE_PIP)
    return path


def _calls(log: Path, prefix: Path) -> list[str]:
    """The logged calls ("pip install -q", "pytest tests notebooks", ...), each made by `prefix`'s Python."""
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    assert all(Path(line.split()[0]).resolve() == prefix.resolve() for line in lines), lines
    return [" ".join(line.split()[1:4]) for line in lines]


def test_make_test_and_make_book_alone_install_first_in_a_fresh_venv(tmp_path):
    """The README's two commands, each alone and in either order, inside an active empty venv and
    with no venv at all (the .venv path): each installs requirements.txt into the Python it uses,
    once, then runs. pip and what it installs are logging stand-ins (offline, seconds)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Makefile", "requirements.txt"):
        shutil.copy2(REPO_ROOT / name, repo / name)
    log = tmp_path / "calls.log"
    install, test, run, book = ("pip install -q", "pytest tests notebooks", "utils.course run --profile",
                                "utils.course book --executed")

    for order in (("test", "book"), ("book", "test")):
        venv = _empty_venv(tmp_path / f"venv-{order[0]}")
        absent = subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True)
        assert absent.returncode != 0  # nothing installed
        active = {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "FAKE_PIP_LOG": str(log)}
        first, second = (_make(target, env_extra=active, cwd=repo) for target in order)
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        want = {"test": [test], "book": [run, book]}
        assert _calls(log, venv) == [install, *want[order[0]], *want[order[1]]]  # once, before the first
        assert _make("test", env_extra=active, cwd=repo).returncode == 0 and _calls(log, venv) == [test]
        (repo / "requirements.txt").touch()  # a changed requirements.txt installs again
        assert _make("test", env_extra=active, cwd=repo).returncode == 0 and _calls(log, venv) == [install, test]

    # no venv: make creates .venv (python3.12 here is a wrapper that makes an empty venv with the pip stand-in)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "python3.12"
    fake_pip = _empty_venv(tmp_path / "template") / "lib"
    (fake_pip,) = fake_pip.glob("python3*/site-packages/pip")
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
          {sys.executable} -m venv --without-pip "$3" && cp -r {fake_pip} "$3"/lib/python3*/site-packages/
          exit $?
        fi
        exec {sys.executable} "$@"
    """))
    wrapper.chmod(0o755)
    for order in (("test", "book"), ("book", "test")):
        shutil.rmtree(repo / ".venv", ignore_errors=True)
        plain = {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_PIP_LOG": str(log)}
        done = [_make(target, env_extra=plain, cwd=repo) for target in order]
        assert all(d.returncode == 0 for d in done), [d.stderr for d in done]
        assert "make: creating .venv with python3.12" in done[0].stdout
        want = {"test": [test], "book": [run, book]}
        assert _calls(log, repo / ".venv") == [install, *want[order[0]], *want[order[1]]]
    assert (repo / ".venv" / ".installed").exists()


def _fake_python(bindir: Path, name: str, version: tuple[int, int]):
    """An interpreter stand-in: answers the version test and makes a venv folder."""
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / name
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "-V" ]; then echo "Python {version[0]}.{version[1]}.0"; exit 0; fi
        if [ "$1" = "-c" ]; then exec {sys.executable} -c "import sys; sys.version_info = ({version[0]}, {version[1]}, 0); exec(sys.argv[1])" "$2"; fi
        if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin" && ln -s {sys.executable} "$3/bin/python"; exit 0; fi
        exit 3
    """))
    script.chmod(0o755)


def test_make_creates_the_venv_with_python_3_11_or_3_12(tmp_path):
    shutil.copy2(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    bindir = tmp_path / "bin"
    _fake_python(bindir, "python3", (3, 13))
    _fake_python(bindir, "python3.11", (3, 11))
    tools = tmp_path / "tools"  # no real python on PATH: only the stand-ins and what the recipe uses
    tools.mkdir()
    for tool in ("mkdir", "ln", "rm"):
        os.symlink(shutil.which(tool), tools / tool)
    path = f"{bindir}:{tools}"
    made = _make(".venv/bin/python", env_extra={"PATH": path, "PIP_REQUIRE_VIRTUALENV": "1"}, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "make: creating .venv with python3.11 (Python 3.11.0); every make target uses it" in made.stdout
    assert (tmp_path / ".venv" / "bin" / "python").exists()

    shutil.rmtree(tmp_path / ".venv")
    (bindir / "python3.11").unlink()
    none = _make(".venv/bin/python", env_extra={"PATH": path}, cwd=tmp_path)
    assert none.returncode != 0 and "no Python 3.11 or 3.12 found" in none.stderr
