"""What each chapter's gpu profile should need on a Colab T4: estimates, until measured on a GPU.

    python -m utils.course gpu-estimates    # writes book/gpu_estimates.json (each landing page shows it)

Nothing here runs a chapter or needs a GPU; every number is computed, and labelled as an estimate:

- Memory (GiB, against the T4's usable memory, `gpu_check.T4_GPU_GIB`, and a free Colab's RAM,
  `T4_HOST_GIB`): a chapter that prints a T4 estimate (`report_t4(...)` in its notebook) has that
  very call evaluated here at the gpu profile's shapes, with the hub model built on PyTorch's meta
  device (shapes, no weights, no download) in the dtype it loads in on a T4. The other chapters
  train small networks and print no estimate; their entry says so.
- Time: for a chapter whose gpu profile keeps the cpu profile's models, the cpu profile's measured
  time (`_build/run_report.json`, written by `python -m utils.course run` / `make book`, on the
  machine named in the entry) times the largest ratio between a gpu and a cpu size in its
  parameters cell: an estimate that holds when the loops run one after another and each grows with
  its own size (longer where they nest), on a CPU like that machine's (the networks are small, so
  a T4 speeds them up little; the environments run on the CPU in every profile). No estimate
  where a size grows more than MAX_RATIO times (the cpu profile only demonstrates that part), or
  where the gpu profile loads a hub model (GPT-2, Gemma-2-2B) or does work its cpu profile skips
  (e.g. training what the cpu profile loads from data/): not measured yet.
"""
from __future__ import annotations

import ast
import json
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat

from utils.core import CourseError
from utils.course import REPO_ROOT
from utils.course.chapters import ready_chapters

ESTIMATES = Path("book") / "gpu_estimates.json"
RUN_REPORT = Path("_build") / "run_report.json"
# beyond this gpu/cpu size ratio the cpu profile only demonstrates that part: no time estimate
MAX_RATIO = 10


def parameters_sizes(chapter: str, root: Path = REPO_ROOT) -> dict:
    """The SIZES dict of a chapter's parameters cell (the cell is run on its own)."""
    nb = nbformat.read(root / "solutions" / f"{chapter}.ipynb", as_version=4)
    cell = next((c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise CourseError(f"{chapter}: no parameters cell")
    ns: dict = {}
    exec(compile(cell.source, f"{chapter}:parameters", "exec"), ns)
    if not isinstance(ns.get("SIZES"), dict) or not {"cpu", "gpu"} <= set(ns["SIZES"]):
        raise CourseError(f"{chapter}: the parameters cell has no SIZES with cpu and gpu profiles")
    return ns["SIZES"]


def _size(v):
    """A size for the ratio: a positive count, or a list's length; None for flags, names, rates."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int) and v > 0:
        return v
    if isinstance(v, (list, tuple)) and v:
        return len(v)
    return None


def size_ratio(sizes: dict) -> tuple[float, str | None]:
    """(largest gpu/cpu ratio over the sizes both profiles set, at least 1; that size's name)."""
    best, key = 1.0, None
    for k, g in sizes["gpu"].items():
        c = sizes["cpu"].get(k)
        if _size(g) and _size(c) and _size(g) / _size(c) > best:
            best, key = _size(g) / _size(c), k
    return best, key


def extra_work(sizes: dict) -> list[str]:
    """Sizes the cpu profile sets to nothing (0, [], None) and the gpu profile does not: work only
    the gpu profile does (e.g. training what the cpu profile loads), which no ratio scales."""
    return sorted(k for k, g in sizes["gpu"].items() if _size(g) and k in sizes["cpu"]
                  and not isinstance(sizes["cpu"][k], (bool, str)) and not _size(sizes["cpu"][k]))


def hub_models(sizes: dict) -> list[str]:
    """The hub models the gpu profile loads in place of the cpu profile's embedded ones."""
    from utils.lm.api import HUB_MODELS

    return sorted({v for k, v in sizes["gpu"].items() if isinstance(v, str) and v in HUB_MODELS
                   and sizes["cpu"].get(k) != v})


# ------------------------------------------------------------------ the chapters' own T4 estimate
def _meta_hub_model(name: str):
    """Hub model `name` at full shape on the meta device (no weights), in its T4 dtype."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, Gemma2Config

    from utils.course.gpu_check import T4_DTYPE
    from utils.lm import fixtures as F
    from utils.lm.api import HUB_MODELS

    if name == "gpt2":
        cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    elif name.startswith("gemma-2-2b"):
        cfg = Gemma2Config(vocab_size=256000, num_hidden_layers=26, head_dim=256, **{
            k: v for k, v in F.GEMMA_FULL.items() if k != "head_dim"})
    else:
        raise CourseError(f"no full-shape config for hub model {name!r}")
    dtype = T4_DTYPE if HUB_MODELS[name].get("frozen") else torch.float32   # as api.hub_dtype on a T4
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model


def _namespace(chapter: str, sizes: dict) -> dict:
    """The names a chapter's `report_t4(...)` call reads, at the gpu profile's shapes."""
    gpu = sizes["gpu"]
    if chapter == "02_algorithm_distillation":
        from utils.ad.pretrain import DarkRoomSpec
        from utils.models.ad_transformer import ADTransformer

        spec = DarkRoomSpec()
        return {"spec": spec, "ad_model": ADTransformer(spec.model_config())}
    if chapter == "03_rlhf_brain_scan":
        from utils.brainscan.train import BrainScanConfig

        hf = _meta_hub_model(gpu["model"])
        return {"n_params": sum(p.numel() for p in hf.parameters()), "lm": SimpleNamespace(hf=hf),
                "BrainScanConfig": BrainScanConfig, "G": gpu}
    if chapter == "04_steering_with_rl":
        import torch

        from utils.lm import fixtures as F

        hf = _meta_hub_model(gpu["sent_model"])
        sae = SimpleNamespace(W_dec=torch.empty(F.GEMMA_SCOPE_D, hf.config.hidden_size, device="meta"))
        return {"lm_rev": SimpleNamespace(hf=hf, source="hub"), "sae_rev": sae, "cfg_rev": hf.config}
    return {}      # a call built from literal shapes (e.g. chapter 10's released models) needs no names


def report_call(chapter: str, root: Path = REPO_ROOT) -> str | None:
    """The source of the chapter's `report_t4(...)` call, or None when it prints no T4 estimate."""
    nb = nbformat.read(root / "solutions" / f"{chapter}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or "report_t4(" not in cell.source:
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "report_t4":
                return ast.get_source_segment(cell.source, node)
    return None


def t4_memory(chapter: str, sizes: dict, root: Path = REPO_ROOT) -> dict | None:
    """The chapter's own T4 estimate (its report_t4 call) at the gpu profile's shapes, or None."""
    from utils.course.gpu_check import t4_estimate

    call = report_call(chapter, root)
    if call is None:
        return None
    got = []
    ns = {**_namespace(chapter, sizes), "SIZES": sizes, "PROFILE": "gpu", "t4_estimate": t4_estimate,
          "report_t4": lambda name, profile, estimate: got.append(estimate)}
    try:
        eval(compile(call, f"{chapter}:report_t4", "eval"), ns)
    except NameError as e:
        raise CourseError(f"{chapter} prints a T4 estimate, but utils/course/gpu_estimate.py cannot build the "
                          f"names its report_t4 call reads ({e}): add them to _namespace") from None
    return got[0]


# ------------------------------------------------------------------ one chapter, every chapter
def chapter_estimate(chapter: str, report: dict, root: Path = REPO_ROOT) -> dict:
    """The gpu profile's estimate for `chapter` (see the module docstring)."""
    sizes = parameters_sizes(chapter, root)
    hubs = hub_models(sizes)
    ratio, key = size_ratio(sizes)
    out: dict = {"hub_models": hubs, "size_ratio": round(ratio, 2), "ratio_of": key}
    mem = t4_memory(chapter, sizes, root)
    out["t4"] = None if mem is None else {k: mem[k] for k in ("gpu_gib", "host_gib", "fits")}
    cpu = report.get(f"{chapter}:cpu")
    if cpu and cpu.get("status") == "ok":
        out["cpu_minutes"] = round(cpu["seconds"] / 60, 1)
        out["cpu_peak_gib"] = round(cpu["peak_mem_mb"] / 1024, 2)
    extra = extra_work(sizes)
    if hubs:
        out["minutes"], out["why_no_time"] = None, f"its gpu profile loads {', '.join(hubs)}, not yet timed on a T4"
    elif extra:
        out["minutes"], out["why_no_time"] = None, (f"its gpu profile also does what the cpu profile skips "
                                                    f"({', '.join(extra)}), not yet timed")
    elif ratio > MAX_RATIO:
        out["minutes"], out["why_no_time"] = None, (f"its gpu profile runs {key} at {ratio:g}x the cpu profile's "
                                                    f"(a demonstration there), not yet timed")
    elif not cpu or cpu.get("status") != "ok":
        out["minutes"], out["why_no_time"] = None, "no measured cpu-profile run (`make book` measures one)"
    else:
        out["minutes"] = max(1, round(cpu["seconds"] * ratio / 60))
    return out


def _cpu_name() -> str:
    """This machine's CPU model and core count (where the cpu-profile times were measured)."""
    import os

    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def write_estimates(root: Path = REPO_ROOT, out: Path | None = None) -> Path:
    """Write every ready chapter's estimate to book/gpu_estimates.json (the landing pages read it)."""
    from utils.course.gpu_check import T4_GPU_GIB, T4_HOST_GIB

    path = root / RUN_REPORT
    report = json.loads(path.read_text()) if path.exists() else {}
    data = {"note": "ESTIMATES, not measurements on a GPU: written by `python -m utils.course gpu-estimates` "
                    "(utils/course/gpu_estimate.py says how each number is computed)",
            "t4_gpu_gib": T4_GPU_GIB, "t4_host_gib": T4_HOST_GIB,
            "cpu_runs_on": _cpu_name(),
            "written": time.strftime("%Y-%m-%d", time.gmtime()),
            "chapters": {c.id: chapter_estimate(c.id, report, root) for c in ready_chapters()}}
    target = out or root / ESTIMATES
    target.write_text(json.dumps(data, indent=1) + "\n")
    return target
