"""Execute solution notebooks with papermill into _build/executed/ and report.

Each notebook runs in a fresh kernel with PROFILE injected; the report records wall
seconds, the kernel's peak resident memory (polled) and the status, in
_build/run_report.json and as a printed table.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from utils.course import REPO_ROOT


@dataclass
class RunResult:
    chapter: str
    profile: str
    seconds: float
    peak_mem_mb: float
    status: str  # "ok" or "failed"
    error: str = ""
    output: str = ""


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
    import nbformat

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
    import logging

    import papermill as pm

    # papermill tries to parse the parameters cell for its own docs and warns on every
    # multi-line SIZES entry; injecting PROFILE does not need that parse
    logging.getLogger("papermill.translators").setLevel(logging.ERROR)

    out.parent.mkdir(parents=True, exist_ok=True)
    env_before = os.environ.get("COURSE_PROFILE")
    os.environ["COURSE_PROFILE"] = profile  # so helpers that read the env agree with the injected PROFILE
    t0 = time.perf_counter()
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
    return RunResult(chapter, profile, round(time.perf_counter() - t0, 1), round(mem.peak, 1), status, error, str(out))


def run(chapters: list[str], profile: str, root: Path = REPO_ROOT, build_dir: Path | None = None,
        src_dir: Path | None = None) -> list[RunResult]:
    build_dir = build_dir or root / "_build"
    src_dir = src_dir or root / "solutions"
    results = []
    for ch in chapters:
        print(f"running {ch} [{profile}] ...", flush=True)
        results.append(run_notebook(src_dir / f"{ch}.ipynb", build_dir / "executed" / f"{ch}.ipynb", profile, ch))
    report = build_dir / "run_report.json"
    previous = json.loads(report.read_text()) if report.exists() else {}
    previous.update({f"{r.chapter}:{r.profile}": asdict(r) for r in results})
    report.write_text(json.dumps(previous, indent=2) + "\n")
    print(table(results))
    print(f"report: {report}")
    return results


def table(results: list[RunResult]) -> str:
    head = f"{'chapter':<36}{'profile':<9}{'seconds':>9}{'peak MB':>10}  status"
    rows = [f"{r.chapter:<36}{r.profile:<9}{r.seconds:>9.1f}{r.peak_mem_mb:>10.0f}  {r.status}" + (f": {r.error}" if r.error else "")
            for r in results]
    return "\n".join([head, "-" * len(head), *rows])
