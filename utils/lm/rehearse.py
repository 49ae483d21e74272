"""Rehearse the gpu profile offline against the hub-shaped fixtures (utils/lm/fixtures.py).

    python -m utils.lm.rehearse                       # `make rehearse`: fixtures, GPT-2 path, chapters
    python -m utils.lm.rehearse --only gpt2           # the GPT-2 path alone (what CI runs)
    python -m utils.lm.rehearse --only hopper         # chapter 07's released decision transformer
    python -m utils.lm.rehearse --only drc33          # chapter 08's released Sokoban DRC(3,3)
    python -m utils.lm.rehearse --only leela          # chapter 05's Leela Chess Zero (lc0 ONNX via lczerolens)
    python -m utils.lm.rehearse --only procgen        # chapter 06's released procgen maze agent (cheese vector)

Each part runs in a fresh subprocess whose environment points every Hugging Face library at
the fixtures (`HF_HOME=<fixtures> HF_HUB_OFFLINE=1`: the libraries read these at import), with
`COURSE_PROFILE=gpu COURSE_REHEARSE=1`: the chapters' gpu branch, with the step counts and batch
sizes that `utils.course.gpu_check.rehearse_sizes` cuts. The report gives, per part: seconds,
peak CPU memory (the subprocess tree's max RSS), the memory the FULL gpu profile would need on a
T4, in GiB against the T4's usable memory as torch reports it (`utils.course.gpu_check.t4_estimate`,
from the shapes the rehearsal ran with; hub models load in the T4's float16 here too), and the
status. It is written to _build/rehearse/report.md. Each part's latest result is kept in
_build/rehearse/results.json, so `--only PART` reruns one part and the table still lists every
part (each with the time of its own run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from utils.checkpoints import REPO_ROOT
from utils.course.chapters import CHAPTERS as _REGISTRY

BUILD = REPO_ROOT / "_build" / "rehearse"
# every chapter's gpu branch: 03 and 04 load hub models (the fixtures); the others train their
# own agents, cut to the smoke profile's counts (`utils.course.gpu_check.smoke_cuts`)
CHAPTERS = tuple(c.id for c in _REGISTRY if c.status == "ready")


def rehearse_gpt2(methods=("rloo", "grpo", "dpo"), sae_layer: int = 8) -> dict:
    """The GPT-2 hub path at full shape, in this process (run it with the fixture environment):
    load_model("gpt2") with its TransformerLens form, load_sae("gpt2", layer), an SAE feature
    read-out and the steering hook on the residual stream, and ONE training step of each TRL
    method with the chapter-03 trainer. Returns shapes, timings and the T4 estimate."""
    import torch

    from utils.brainscan.analysis import weight_deltas
    from utils.brainscan.train import BrainScanConfig, get_task, train_method
    from utils.course.gpu_check import t4_estimate
    from utils.lm import load_model, load_sae
    from utils.lm.fixtures import is_fixture
    from utils.steering.hook import steer_resid

    out: dict = {"steps": {}}
    t0 = time.time()
    lm = load_model("gpt2")
    if lm.source != "hub" or not is_fixture(lm):
        raise RuntimeError(f"expected the hub fixture for gpt2, got source={lm.source}, fixture={is_fixture(lm)}")
    n_params = sum(p.numel() for p in lm.hf.parameters())
    tl = lm.tl
    out["model"] = {"class": type(lm.hf).__name__, "params": n_params, "n_layers": tl.cfg.n_layers,
                    "d_model": tl.cfg.d_model, "d_vocab": tl.cfg.d_vocab, "dtype": str(lm.hf.dtype),
                    "tokenizer_len": len(lm.tokenizer), "seconds": round(time.time() - t0, 1)}
    t1 = time.time()
    sae = load_sae("gpt2", layer=sae_layer)
    hook = sae.cfg.metadata.hook_name
    ids = tl.to_tokens(["the movie was great and", "the plot was dull but"])
    with torch.no_grad():
        _, cache = tl.run_with_cache(ids, names_filter=hook)
        feats = sae.encode(cache[hook])
        feat = torch.full(ids.shape, -1, device=ids.device)
        feat[:, -1] = int(feats[0, -1].argmax())
        clean = tl(ids)[:, -1]
        steered = tl.run_with_hooks(ids, fwd_hooks=[(hook, lambda r, hook: steer_resid(r, sae, feat, 40.0))])[:, -1]
    out["sae"] = {"class": type(sae).__name__, "hook": hook, "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae,
                  "feature_shape": list(feats.shape), "firing": float((feats > 0).float().mean()),
                  "steer_changes_logits": bool((steered - clean).abs().max() > 0),
                  "seconds": round(time.time() - t1, 1)}
    del cache
    cfg = BrainScanConfig(steps=1, lr=1e-5, prompts_per_step=2, num_generations=2, pair_samples=2,
                          max_new_tokens=8, seed=0)
    task = get_task("sentiment")
    for m in methods:
        t2 = time.time()
        tuned, log = train_method(lm, m, task, cfg)
        d = weight_deltas(lm.hf, tuned)
        moved = sum(int(v.abs().max() > 0) for v in d.values())
        out["steps"][m] = {"seconds": round(time.time() - t2, 1), "history": len(log["history"]),
                           "params_changed": moved, "params": len(d)}
        del tuned, d
    out["t4"] = t4_estimate(n_params, n_layers=tl.cfg.n_layers, d_model=tl.cfg.d_model, d_vocab=tl.cfg.d_vocab,
                            batch=8, seq=128, trainable=True, ref_model=True, extra_models=1)
    out["seconds"] = round(time.time() - t0, 1)
    return out


# ------------------------------------------------------------------------------ the runner
def rehearse_hopper(episodes: int = 2, steps: int = 20) -> dict:
    """Chapter 07's released decision transformer at full shape, in this process (run it with the
    fixture environment): load `edbeeching/decision-transformer-gym-hopper-medium` through
    `utils.dt.hopper.load_released_dt`, a short conditioning curve in Hopper-v5 (when MuJoCo is
    installed) and the attention to the return tokens. Returns shapes and timings."""
    from utils.dt import hopper

    t0 = time.time()
    dt = hopper.load_released_dt()
    if not dt.is_fixture:
        raise RuntimeError(f"expected the hub fixture for {hopper.HUB_REPO}, got the real model")
    cfg = dt.config
    out: dict = {"model": {"class": type(dt.model).__name__, "params": sum(p.numel() for p in dt.model.parameters()),
                           "n_layer": cfg.n_layer, "n_head": cfg.n_head, "hidden_size": cfg.hidden_size,
                           "seconds": round(time.time() - t0, 1)}}
    t1 = time.time()
    try:
        curve = hopper.conditioning_curve(dt, [600, 3600, 8000], n_episodes=episodes, max_steps=steps)
        out["curve"] = {str(k): [round(float(x), 2) for x in v] for k, v in curve.items()}
        ctx = hopper.rollout(dt, 3600, n_episodes=episodes, max_steps=steps)["context"]
    except Exception as e:  # no MuJoCo: the attention analysis still runs, on random states
        import torch
        out["curve"] = f"skipped: {e}"
        ctx = (torch.randn(episodes, hopper.CONTEXT, 11), torch.zeros(episodes, hopper.CONTEXT, 3),
               torch.full((episodes, hopper.CONTEXT), 3600.0), torch.arange(hopper.CONTEXT).expand(episodes, -1))
    out["attention_to_return"] = [round(float(x), 3) for x in hopper.attention_to_return(dt, *ctx)[:, 0]]
    out["seconds"] = round(time.time() - t1, 1)
    return out


def rehearse_drc33(n_levels: int = 8, think_steps=(0, 2), max_steps: int = 12) -> dict:
    """Chapter 08's released DRC(3,3) at full shape, in this process (run it with the fixture
    environment): load `AlignmentResearch/learned-planner` through `utils.models.drc33`, and run
    section 8's measurements (`utils.planning.released.measure_released`: thinking-time curve,
    pacing, plan probes by distance with their controls, route steering) on 10 x 10 rooms."""
    from utils.models import drc33
    from utils.planning.released import measure_released, released_bank

    t0 = time.time()
    drc = drc33.load_released_drc()
    if not drc.fixture:
        raise RuntimeError(f"expected the hub fixture for {drc33.HUB_REPO}, got the real model")
    out: dict = {"model": {"class": type(drc).__name__, "params": sum(p.numel() for p in drc.parameters()),
                           "seconds": round(time.time() - t0, 1)}}
    t1 = time.time()
    bank = released_bank(n_levels)
    res = measure_released(drc, bank, max_steps=max_steps, think_steps=think_steps, probe_epochs=10,
                           n_random_init=1, progress=lambda *a: None)
    out["thinking_curve"] = {str(k): round(v[0], 3) for k, v in res["thinking"].items()}   # solve rate
    out["probe_away_f1"] = round(res["probe"]["1+"][0], 3)
    out["steer_levels"] = res["n_steer_levels"]
    out["seconds"] = round(time.time() - t1, 1)
    return out


def rehearse_leela(n_boards: int = 64) -> dict:
    """Chapter 05's Leela Chess Zero path, in this process (run it with the fixture environment): load
    the look-ahead network's hub file through `utils.alphazero.leela` (lczerolens), evaluate the puzzles
    and random positions, find the residual blocks, gather the probe dataset (concepts, look-ahead
    labels). Returns shapes, timings and the T4 ESTIMATE for the real T82 network (leela.t4_estimate)."""
    from utils.alphazero import leela

    leela.ensure_lczerolens()
    t0 = time.time()
    net = leela.load_leela()
    if not leela.is_fixture(net):
        raise RuntimeError(f"expected the hub fixture for {leela.HUB_REPO}, got the real network")
    blocks = leela.residual_blocks(net)
    weights = sum(t.numel() for t in net.state_dict().values())   # onnx2torch keeps most weights as buffers
    out: dict = {"model": {"weights": weights, "blocks": len(blocks),
                           "kind": blocks[0].kind, "seconds": round(time.time() - t0, 1)}}
    t1 = time.time()
    boards = leela.puzzle_boards() + leela.random_boards(n_boards, seed=0)
    out["evaluated"] = len(leela.evaluate(net, boards))
    moves = leela.best_moves(net, leela.puzzle_boards())
    out["puzzle_first_move_found"] = f"{sum(m == p['moves'][0] for m, p in zip(moves, leela.PUZZLES))}/{len(moves)}"
    feats, labels = leela.probe_dataset(net, boards)
    out["probe_features"] = {str(b): list(f.shape) for b, f in list(feats.items())[:2]}
    out["concepts"] = sorted(labels)
    out["lookahead_labels"] = leela.lookahead_labels().tolist()
    out["claims"] = "skipped: random weights (a fixture), no probe accuracy is meaningful"
    print(f"leela: {out['claims']}")
    out["seconds"] = round(time.time() - t1, 1)
    out["t4"] = leela.t4_estimate()
    return out


PROCGEN_SKIP = ("skipped: procgen-mirror not installed (python -m utils.goal_misgen.procgen_maze --install; "
                "never in requirements.txt)")


def rehearse_procgen(fixture: str | Path, n_seeds: int = 8) -> dict:
    """Chapter 06's released maze agent, in this process: the random-weight file in the released format at
    full shape (`impala.write_maze_fixture`, written into `fixture` when missing: the real file is not on the
    hub), loaded with `impala.load_maze_policy`, then the cheese-vector experiment with its controls
    (`procgen_maze.cheese_vector_experiment`) on level seeds 0..n_seeds-1, where procgen-mirror is installed;
    elsewhere the result says "skipped" (PROCGEN_SKIP)."""
    import torch

    from utils.goal_misgen import impala, procgen_maze

    t0 = time.time()
    fixture = Path(fixture)
    if not fixture.exists():
        impala.write_maze_fixture(fixture)
    policy = impala.load_maze_policy(fixture)
    if not policy.fixture:
        raise RuntimeError(f"expected the random-weight maze fixture at {fixture}, got a real checkpoint")
    out: dict = {"model": {"class": type(policy).__name__, "params": sum(p.numel() for p in policy.parameters()),
                           "seconds": round(time.time() - t0, 1)}}
    if not procgen_maze.procgen_available():
        out["skipped"] = PROCGEN_SKIP
        print(f"procgen: {PROCGEN_SKIP}")
        return out
    t1 = time.time()
    torch.set_num_threads(1)
    res = procgen_maze.cheese_vector_experiment(policy, seeds=range(n_seeds))
    out["mazes"] = {"with_decision_square": res["n_mazes"], "without": len(res["no_decision_square"])}
    out["median_p_cheese"] = {k: round(v[0], 3) for k, v in res["median"].items()}
    out["claims"] = "skipped: random weights (a fixture), no P(cheese | decision square) is meaningful"
    print(procgen_maze.format_result(res))
    out["seconds"] = round(time.time() - t1, 1)
    return out


def _ensure_agent_fixtures(hf_home: Path) -> None:
    """Write the released-agent fixtures a fixtures folder lacks (one written before a loader was
    added), without rewriting the rest."""
    import importlib

    from utils.lm.fixtures import AGENT_FIXTURES

    for module, writer in AGENT_FIXTURES:
        mod = importlib.import_module(module)
        repos = list(mod.REPOS.values()) if hasattr(mod, "REPOS") else [mod.HUB_REPO]
        kind = getattr(mod, "REPO_TYPE", "model")     # a Space's files are under spaces--owner--name
        if not all((hf_home / "hub" / (f"{kind}s--" + r.replace("/", "--"))).exists() for r in repos):
            print(f"writing the missing fixture of {module} ...", flush=True)
            getattr(mod, writer)(hf_home / "hub")


def _env(hf_home: Path) -> dict:
    from utils.lm.fixtures import env_for

    env = dict(os.environ)
    env.update(env_for(hf_home))
    env.update(COURSE_PROFILE="gpu", COURSE_REHEARSE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
               MKL_NUM_THREADS=env.get("MKL_NUM_THREADS", "1"), PYTHONPATH=str(REPO_ROOT))
    return env


def _run(cmd: list[str], env: dict, log: Path, timeout: int) -> tuple[int, float, float]:
    """(return code, seconds, peak resident GiB of the child process tree, polled) of one part."""
    from utils.course.run import _PeakMemory

    t0 = time.time()
    with open(log, "w") as f, _PeakMemory() as mem:
        try:
            rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                cwd=REPO_ROOT).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.time() - t0, mem.peak / 1024


def _run_chapter(chapter: str, timeout: int) -> int:
    """(in the child) execute the chapter's solution notebook at the gpu profile into _build/rehearse/."""
    from utils.course.run import run_notebook

    res = run_notebook(REPO_ROOT / "solutions" / f"{chapter}.ipynb", BUILD / f"{chapter}.ipynb", "gpu", chapter,
                       timeout=timeout)
    print(f"{chapter}: {res.status} in {res.seconds} s {res.error}")
    return 0 if res.status == "ok" else 1


def _last_error(log: Path, part: str) -> str:
    """The one-line error a failed part left at the end of its log."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    mine = [ln for ln in lines if ln.startswith(f"{part}: failed")]
    return (mine[-1].split(" s ", 1)[-1] if mine else (lines[-1] if lines else "no output"))[:200]


def gemma_width(hf_home: Path) -> str | None:
    """The Gemma width of the fixtures in `hf_home` ('full', 'reduced' or 'none'); None when no
    fixtures are there."""
    marker = Path(hf_home) / "FIXTURES.json"
    if not marker.exists():
        return None
    repos = json.loads(marker.read_text()).get("repos", [])
    shape = next((r.get("shape", "") for r in repos if r.get("repo") == "google/gemma-2-2b"), None)
    if shape is None:
        return "none"
    return "full" if shape.startswith("full") else "reduced"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m utils.lm.rehearse")
    p.add_argument("--fixtures", default=str(REPO_ROOT / "_build" / "hub-fixtures"), help="HF_HOME of the fixtures")
    p.add_argument("--only", nargs="*", default=None, help="parts: gpt2, hopper and/or chapter ids (default: all)")
    p.add_argument("--gemma", choices=("reduced", "full", "none"), default=None,
                   help="Gemma-2-2B fixture width (default: keep the fixtures there, else write 'full', "
                        "which chapter 04 needs; ~7 GiB RAM to write); a different width rewrites them")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per part")
    p.add_argument("--json", help="(internal) run the GPT-2 path here and write its result to this file")
    p.add_argument("--chapter", help="(internal) execute this chapter here")
    p.add_argument("--hopper-json", help="(internal) run chapter 07's released-DT path here, result to this file")
    p.add_argument("--drc33-json", help="(internal) run chapter 08's released-DRC path here, result to this file")
    p.add_argument("--leela-json", help="(internal) run chapter 05's Leela path here, result to this file")
    p.add_argument("--procgen-json", help="(internal) run chapter 06's procgen maze path here, result to this file")
    args = p.parse_args(argv)
    if args.chapter:
        return _run_chapter(args.chapter, args.timeout)
    if args.hopper_json:
        res = rehearse_hopper()
        Path(args.hopper_json).write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    if args.drc33_json:
        res = rehearse_drc33()
        Path(args.drc33_json).write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    if args.leela_json:
        res = rehearse_leela()
        Path(args.leela_json).write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    if args.procgen_json:
        res = rehearse_procgen(Path(os.environ.get("HF_HOME", REPO_ROOT / "_build" / "hub-fixtures"))
                               / "released" / "model_rand_region_5.pth")
        Path(args.procgen_json).write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    if args.json:
        res = rehearse_gpt2()
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    BUILD.mkdir(parents=True, exist_ok=True)
    hf_home = Path(args.fixtures)
    parts = args.only or ["gpt2", "hopper", "drc33", "leela", "procgen", *CHAPTERS]
    have = gemma_width(hf_home)
    if have is None or (args.gemma is not None and have != args.gemma):
        from utils.lm.fixtures import write_fixtures
        gemma = args.gemma or "full"
        print(f"writing the fixtures to {hf_home} (Gemma: {gemma}) ...", flush=True)
        write_fixtures(hf_home, gemma=gemma)
    _ensure_agent_fixtures(hf_home)
    env = _env(hf_home)
    rows = []
    for part in parts:
        log = BUILD / f"{part}.log"
        if part == "04_steering_with_rl" and gemma_width(hf_home) != "full":
            status = (f"skipped: needs the full-shape Gemma-2-2B fixture (Gemma Scope's loader hard-codes "
                      f"d_in 2304), these fixtures have Gemma at {gemma_width(hf_home)!r} width: run "
                      f"`python -m utils.lm.rehearse --gemma full --only {part}` (about 7 GiB RAM to write)")
            rows.append({"part": part, "seconds": 0, "peak_cpu_gib": 0.0, "t4_gib": None, "t4_fits": None,
                         "status": status})
            print(status, flush=True)
            continue
        est = BUILD / f"{part}.t4.json"
        est.unlink(missing_ok=True)
        env["COURSE_REHEARSE_REPORT"] = str(est)
        print(f"--- rehearsing {part} (log: {log})", flush=True)
        if part == "gpt2":
            cmd = [sys.executable, "-m", "utils.lm.rehearse", "--json", str(est)]
        elif part == "hopper":   # chapter 07's released decision transformer (no T4 estimate: 0.86M parameters)
            cmd = [sys.executable, "-m", "utils.lm.rehearse", "--hopper-json", str(BUILD / "hopper.json")]
        elif part == "drc33":    # chapter 08's released DRC(3,3) (no T4 estimate: 1.29M parameters)
            cmd = [sys.executable, "-m", "utils.lm.rehearse", "--drc33-json", str(BUILD / "drc33.json")]
        elif part == "leela":    # chapter 05's Leela Chess Zero (its T4 line: an estimate for the real T82 net)
            cmd = [sys.executable, "-m", "utils.lm.rehearse", "--leela-json", str(est)]
        elif part == "procgen":  # chapter 06's released maze agent (no T4 estimate: 3.65M parameters)
            (BUILD / "procgen.json").unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "utils.lm.rehearse", "--procgen-json", str(BUILD / "procgen.json")]
        else:
            cmd = [sys.executable, "-m", "utils.lm.rehearse", "--chapter", part, "--timeout", str(args.timeout)]
        rc, secs, peak = _run(cmd, env, log, args.timeout)
        t4 = json.loads(est.read_text()).get("t4") if est.exists() else None
        status = "ok" if rc == 0 else ("timeout" if rc == 124 else f"failed: {_last_error(log, part)}")
        if part == "procgen" and rc == 0 and (BUILD / "procgen.json").exists():
            status = json.loads((BUILD / "procgen.json").read_text()).get("skipped", status)
        rows.append({"part": part, "seconds": round(secs), "peak_cpu_gib": round(peak, 2),
                     "t4_gib": t4["total_gib"] if t4 else None, "t4_fits": t4["fits"] if t4 else None,
                     "t4_host_gib": t4.get("host_gib") if t4 else None,
                     "status": status})
        print(json.dumps(rows[-1]), flush=True)
    md = report_table(rows, hf_home)
    print(md)
    # the procgen part is skipped where procgen-mirror is not installed (a separate install step): not a failure
    return 0 if all(r["status"] == "ok" or r["status"] == PROCGEN_SKIP for r in rows) else 1


def report_table(rows: list[dict], hf_home: Path, build: Path | None = None) -> str:
    """Merge this invocation's rows into build/results.json (one entry per part, the latest run
    wins) and write build/report.md with every part rehearsed so far, in the standard order."""
    build = build or BUILD
    load = os.getloadavg()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    store = build / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for r in rows:
        results[r["part"]] = {**r, "run_at": stamp, "load": [round(x, 2) for x in load], "fixtures": str(hf_home)}
    store.write_text(json.dumps(results, indent=1))
    order = ["gpt2", "hopper", "drc33", "leela", "procgen", *CHAPTERS]
    parts = sorted(results, key=lambda p: (order.index(p) if p in order else len(order), p))
    from utils.course.gpu_check import T4_GPU_GIB, T4_HOST_GIB

    md = [f"| chapter | seconds | peak CPU memory (GiB) | estimated T4 memory (GiB: GPU of the {T4_GPU_GIB:g} torch "
          f"sees on a T4, RAM of a free Colab's {T4_HOST_GIB:g}) | status | run at |", "|---|---|---|---|---|---|"]
    for part in parts:
        r = results[part]
        host = "" if r.get("t4_host_gib") is None else f", RAM {r['t4_host_gib']:.1f}"
        t4 = ("- (not estimated: small agents, see the run)" if r["t4_gib"] is None
              else f"GPU {r['t4_gib']:.1f}{host} ({'fits' if r['t4_fits'] else 'DOES NOT FIT'})")
        md.append(f"| {part} | {r['seconds']} | {r['peak_cpu_gib']:.2f} | {t4} | {r['status']} | {r['run_at']} |")
    md.append(f"\nload average at the end of the last run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
              f"fixtures: {hf_home}")
    text = "\n".join(md) + "\n"
    (build / "report.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
