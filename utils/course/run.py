"""Execute solution notebooks with papermill into _build/executed/ and report.

Chapters run in parallel worker processes (one per core by default, each kernel
single-threaded), longest first by the last report's times, with a progress line per
chapter. A chapter whose inputs have not changed since its last successful run at that
profile (the notebook, the `utils/` modules and `data/` files it uses, requirements.txt,
and the profile: `chapter_inputs`) is not executed again unless `force` is set. A failing
chapter does not stop the others. The report records wall seconds, the kernel's peak
resident memory (polled) and the status, in _build/run_report.json and as a printed table.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import nbformat
import papermill as pm
import psutil

# the repository root, as utils.course.REPO_ROOT, without importing `utils` (and torch) in workers
REPO_ROOT = Path(__file__).resolve().parents[2]

HEARTBEAT_S = 60.0  # a status line at least this often while chapters run


@dataclass
class RunResult:
    chapter: str
    profile: str
    seconds: float
    peak_mem_mb: float
    status: str  # "ok", "failed" or "cached" (inputs unchanged since the last ok run)
    error: str = ""
    output: str = ""
    inputs: str = ""       # chapter_inputs digest the run used
    started: float = 0.0   # unix time the execution started (0 when cached)


class _PeakMemory:
    """Polls the resident memory of this process's children (the kernel) and keeps the peak."""
    def __init__(self, interval: float = 0.2):
        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def clean_streams(path: Path) -> None:
    """Merge each cell's consecutive stream outputs and resolve carriage returns, so a tqdm
    bar shows as its final state (one line) on the website instead of one block per update."""

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and merged and merged[-1].output_type == "stream" and merged[-1].name == out.name:
                merged[-1].text += out.text
            else:
                merged.append(out)
        for out in merged:
            if out.output_type == "stream":
                out.text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in out.text.split("\n"))
        if "outputs" in cell:
            cell.outputs = merged
    nbformat.write(nb, path)


def run_notebook(src: Path, out: Path, profile: str, chapter: str, timeout: int | None = None) -> RunResult:
    """Execute one notebook in this process (a fresh kernel as its child) and return its result."""


    # papermill tries to parse the parameters cell for its own docs and warns on every
    # multi-line SIZES entry; injecting PROFILE does not need that parse
    logging.getLogger("papermill.translators").setLevel(logging.ERROR)

    out.parent.mkdir(parents=True, exist_ok=True)
    env_before = os.environ.get("COURSE_PROFILE")
    os.environ["COURSE_PROFILE"] = profile  # so helpers that read the env agree with the injected PROFILE
    started, t0 = time.time(), time.perf_counter()
    status, error = "ok", ""
    try:
        with _PeakMemory() as mem:
            pm.execute_notebook(str(src), str(out), parameters={"PROFILE": profile}, cwd=str(src.parent),
                                kernel_name="python3", progress_bar=False, execution_timeout=timeout)
    except Exception as e:  # papermill raises PapermillExecutionError with the failing cell's error
        status = "failed"
        error = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
    finally:
        if out.exists():
            clean_streams(out)
        if env_before is None:
            os.environ.pop("COURSE_PROFILE", None)
        else:
            os.environ["COURSE_PROFILE"] = env_before
    return RunResult(chapter, profile, round(time.perf_counter() - t0, 1), round(mem.peak, 1), status, error, str(out),
                     started=started)


# ---------------------------------------------------------------- inputs of a chapter

def _code_cells(nb_path: Path) -> list[str]:
    nb = json.loads(nb_path.read_text())
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb.get("cells", []) if c.get("cell_type") == "code"]


def _imported_names(source: str, module: str = "", is_package: bool = False) -> set[str]:
    """Absolute names of every module (and `from x import name` candidate) that `source` imports,
    anywhere in it (function-level imports included); relative imports resolved against `module`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics or shell escapes in a cell: drop those lines and retry
        try:
            tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            return set(re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, re.M))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _module_file(root: Path, name: str) -> Path | None:
    p = root.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    return None


def used_modules(nb_path: Path, root: Path = REPO_ROOT, package: str = "utils") -> dict[str, Path]:
    """The `package` modules a notebook imports, followed through their own imports, with
    every parent package (its __init__ runs on import): {module name: file}."""
    todo = [n for src in _code_cells(nb_path) for n in _imported_names(src)]
    found: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name != package and not name.startswith(package + "."):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in found:
                continue
            path = _module_file(root, mod)
            if path is None:
                continue  # `from utils.x import name` where name is not a module
            found[mod] = path
            todo.extend(_imported_names(path.read_text(), mod, path.name == "__init__.py"))
    return dict(sorted(found.items()))


def used_data(sources: list[str], data_dir: Path) -> list[Path]:
    """The files in data/ a chapter may load: those whose artifact name (the file's stem for a
    top-level file, its folder's name otherwise), or that name's prefix up to its first `_` or
    `-` (names built at run time, f"ch02_{variant}"), appears in the chapter's sources.
    Errs towards re-running: a shared prefix counts as use."""
    if not data_dir.is_dir():
        return []
    text = "\n".join(sources)
    used = []
    for f in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        unit = f.stem if f.parent == data_dir else f.parent.name
        prefix = re.match(r"[^_-]+[_-]", unit)
        if f.name != "manifest.json" and (unit in text or (prefix and prefix.group(0) in text)):
            used.append(f)
    return used


def chapter_inputs(nb_path: Path, profile: str, root: Path = REPO_ROOT) -> tuple[str, list[Path]]:
    """The digest of everything a chapter's run depends on, and the files it covers: the
    notebook, the utils modules and data files it uses, requirements.txt, and the profile."""
    modules = list(used_modules(nb_path, root).values())
    sources = _code_cells(nb_path) + [p.read_text() for p in modules]
    files = [nb_path, *modules, *used_data(sources, root / "data")]
    if (root / "requirements.txt").is_file():
        files.append(root / "requirements.txt")
    h = hashlib.sha256(f"profile={profile}\n".encode())
    for f in files:
        rel = f.relative_to(root) if f.is_relative_to(root) else Path(f.name)
        h.update(f"{rel.as_posix()}\n".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16], files


def _executed_profile(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["metadata"]["papermill"]["parameters"]["PROFILE"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- the parallel run

def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run_in_worker(src: Path, out: Path, profile: str, chapter: str, single_thread: bool, log_dir: Path) -> RunResult:
    """Execute one chapter in a child Python process, so chapters run side by side and a
    crash (or a kernel that kills its parent) only fails that chapter."""
    log_dir.mkdir(parents=True, exist_ok=True)
    result_file, log = log_dir / f"{chapter}.result.json", log_dir / f"{chapter}.log"
    result_file.unlink(missing_ok=True)
    env = dict(os.environ, COURSE_PROFILE=profile, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    if single_thread:  # one core per kernel; a chapter that sets its own threads still wins
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(var, "1")
    started, t0 = time.time(), time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, "-c", _WORKER, __file__, str(src), str(out), profile, chapter,
                               str(result_file)], cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        return RunResult(**json.loads(result_file.read_text()))
    except (OSError, ValueError, TypeError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        why = lines[-1][:300] if lines else f"worker exited with code {proc.returncode}"
        return RunResult(chapter, profile, round(time.perf_counter() - t0, 1), 0.0, "failed",
                         f"{why} (log: {log})", str(out), started=started)


class _Progress:
    """One line per chapter event: done / running / queued counts, seconds, and the estimate
    (the chapter's time in the last report)."""

    def __init__(self, chapters: list[str], estimates: dict[str, float], profile: str, write=print):
        self.n, self.estimates, self.profile, self.write = len(chapters), estimates, profile, write
        self.state = {c: "queued" for c in chapters}
        self.start: dict[str, float] = {}
        self.lock = threading.Lock()
        self.last_line = time.monotonic()

    def _est(self, ch: str) -> str:
        e = self.estimates.get(ch)
        return f"last report {e:.0f} s" if e else "no earlier run"

    def _counts(self) -> str:
        s = list(self.state.values())
        done = sum(x not in ("queued", "running") for x in s)
        return f"[{done}/{self.n} done, {s.count('running')} running, {s.count('queued')} queued]"

    def event(self, ch: str, state: str, seconds: float | None = None, note: str = "") -> None:
        with self.lock:
            self.state[ch] = state
            if state == "running":
                self.start[ch] = time.monotonic()
            secs = "" if seconds is None else f" {seconds:.0f} s"
            self.write(f"{self._counts()} {ch} [{self.profile}] {state}{secs} ({self._est(ch)}){note}", flush=True)
            self.last_line = time.monotonic()

    def heartbeat(self) -> None:
        with self.lock:
            if time.monotonic() - self.last_line < HEARTBEAT_S:
                return
            now = time.monotonic()
            running = [f"{c} {now - self.start[c]:.0f} s ({self._est(c)})" for c, s in self.state.items() if s == "running"]
            self.write(f"{self._counts()} running: {'; '.join(running)}", flush=True)
            self.last_line = now


def _plan(chapters: list[str], profile: str, root: Path, build_dir: Path, src_dir: Path, previous: dict,
          force: bool) -> tuple[dict[str, RunResult], list[tuple[str, Path, Path, str]]]:
    """(cached results, chapters to run): a chapter is cached when its inputs hash matches its last ok run."""
    results: dict[str, RunResult] = {}
    todo: list[tuple[str, Path, Path, str]] = []
    for ch in chapters:
        src, out = src_dir / f"{ch}.ipynb", build_dir / "executed" / f"{ch}.ipynb"
        digest, _ = chapter_inputs(src, profile, root)
        last = previous.get(f"{ch}:{profile}", {})
        if (not force and last.get("status") == "ok" and last.get("inputs") == digest and out.exists()
                and _executed_profile(out) == profile):
            results[ch] = RunResult(ch, profile, last.get("seconds", 0.0), last.get("peak_mem_mb", 0.0), "cached",
                                    output=str(out), inputs=digest)
        else:
            todo.append((ch, src, out, digest))
    return results, todo


def _execute(todo: list, profile: str, jobs: int, build_dir: Path, progress: "_Progress") -> dict[str, RunResult]:
    """Run the chapters in `todo` in `jobs` worker threads (each drives a worker process)."""
    def one(ch: str, src: Path, out: Path, digest: str) -> RunResult:
        progress.event(ch, "running")
        r = _run_in_worker(src, out, profile, ch, jobs > 1, build_dir / "logs")
        r.inputs = digest
        progress.event(ch, r.status, r.seconds, f": {r.error}" if r.error else "")
        return r

    results: dict[str, RunResult] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending = {pool.submit(one, *t) for t in todo}
        while pending:
            finished, pending = wait(pending, timeout=5.0, return_when=FIRST_COMPLETED)
            for f in finished:
                r = f.result()
                results[r.chapter] = r
            progress.heartbeat()
    return results


def _write_report(report_path: Path, ordered: list[RunResult]) -> None:
    known = {f.name for f in fields(RunResult)}
    previous = _read_report(report_path)  # again: another run may have reported meanwhile
    for r in ordered:
        if r.status != "cached":
            previous[f"{r.chapter}:{r.profile}"] = {k: v for k, v in asdict(r).items() if k in known}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = report_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(previous, indent=2) + "\n")
    tmp.replace(report_path)


def run(chapters: list[str], profile: str, root: Path = REPO_ROOT, build_dir: Path | None = None,
        src_dir: Path | None = None, jobs: int | None = None, force: bool = False, write=print) -> list[RunResult]:
    """Run `chapters` at `profile` in up to `jobs` parallel workers (default: one per core),
    skipping those whose inputs are unchanged since their last ok run (unless `force`)."""
    build_dir = build_dir or root / "_build"
    report_path = build_dir / "run_report.json"
    previous = _read_report(report_path)
    t_start = time.perf_counter()
    results, todo = _plan(chapters, profile, root, build_dir, src_dir or root / "solutions", previous, force)
    estimates = {ch: float(previous[f"{ch}:{profile}"]["seconds"]) for ch in chapters
                 if previous.get(f"{ch}:{profile}", {}).get("seconds")}
    jobs = max(1, min(jobs or default_jobs(), len(todo) or 1))
    progress = _Progress(chapters, estimates, profile, write)
    for ch in results:
        progress.event(ch, "cached", note=" inputs unchanged, not re-run (--force re-runs)")
    # longest first (unknown times count as longest), so the last chapter to start is a short one
    todo.sort(key=lambda t: -estimates.get(t[0], float("inf")))
    if todo:
        write(f"running {len(todo)} chapter(s) at profile {profile} in {jobs} worker(s)"
              + (f"; {len(results)} cached" if results else ""), flush=True)
        results.update(_execute(todo, profile, jobs, build_dir, progress))
    ordered = [results[ch] for ch in chapters]
    _write_report(report_path, ordered)
    write(table(ordered))
    ran = [r for r in ordered if r.status != "cached"]
    if ran:
        wall, total = time.perf_counter() - t_start, sum(r.seconds for r in ran)
        write(f"wall {wall:.0f} s for {total:.0f} s of chapter time ({wall / max(total, 1e-9):.2f} of it) "
              f"in {jobs} worker(s)")
    failed = [r.chapter for r in ordered if r.status == "failed"]
    if failed:
        write(f"FAILED: {', '.join(failed)} (logs in {build_dir / 'logs'}); the other chapters ran")
    write(f"report: {report_path}")
    return ordered


def succeeded(results: list[RunResult]) -> bool:
    """True when no chapter failed (a cached chapter counts as its last, ok, run)."""
    return all(r.status in ("ok", "cached") for r in results)


def _read_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def table(results: list[RunResult]) -> str:
    head = f"{'chapter':<36}{'profile':<9}{'seconds':>9}{'peak MB':>10}  status"
    rows = [f"{r.chapter:<36}{r.profile:<9}{r.seconds:>9.1f}{r.peak_mem_mb:>10.0f}  {r.status}" + (f": {r.error}" if r.error else "")
            for r in results]
    return "\n".join([head, "-" * len(head), *rows])


def _worker(argv: list[str]) -> int:
    src, out, profile, chapter, result_file = argv
    r = run_notebook(Path(src), Path(out), profile, chapter)
    Path(result_file).write_text(json.dumps(asdict(r)))
    return 0


# a worker loads this file alone (not the `utils` package, which imports torch) and runs one chapter
_WORKER = """import importlib.util, sys
spec = importlib.util.spec_from_file_location("course_run_worker", sys.argv[1])
mod = sys.modules["course_run_worker"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
sys.exit(mod._worker(sys.argv[2:]))
"""
