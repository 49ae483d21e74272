"""The chapter's measurements on the shipped agents, over training seeds, as one printed report.

    python -m utils.planning.report [--levels 200] [--seeds 0 1 2]

For each seed: the thinking-time curve (solve rate on held-out levels vs extra thinking steps
0, 1, 2, 4, 8) of the DRC and the conv baseline; pacing at the start of hard vs easy levels
(optimal solution longer than the median or not); square probes (agent / box direction within
k steps) on every layer and tick of the DRC, against the observation-only probe, the same
probe on a random-init DRC fed the same observations, and the conv baseline's layers; steering
the first move with the probe direction against a random direction of the same norm; and
ablating the probe subspace against a random subspace. Play is sampled from the policy (greedy
play of these small agents loops), with the same seed in every condition. Intervals are over seeds (Student t,
unit = training seed); the "no thinking effect" claim is tested with TOST.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from utils.planning.intervene import ablate_subspace, random_basis, steer_first_move
from utils.planning.play import THINK_STEPS, pacing, play, thinking_curve
from utils.planning.probes import fit_square_probe, obs_features, plan_labels, record_on_observations, square_rows
from utils.planning.train import TrainConfig, heldout_bank, load_agent, make_agent
from utils.stats import fmt_interval, seed_interval, seed_summary, tost_equivalence


def seed_measurements(seed: int, bank, horizon: int = 4, steer_scales=(1.0, 4.0, 16.0), probe_epochs: int = 150) -> dict:
    cfg = TrainConfig()
    drc, conv = load_agent("drc", seed), load_agent("conv", seed)
    out: dict = {}
    for kind, m in (("drc", drc), ("conv", conv)):
        out[f"think_{kind}"] = {k: float(v.mean()) for k, v in thinking_curve(m, bank, THINK_STEPS, greedy=False, seed=seed).items()}
    names = [drc.hook_name("h", d, n) for d in range(drc.depth) for n in range(drc.ticks)]
    p = play(drc, bank, record=tuple(names), keep_obs=True, greedy=False, seed=seed)
    hard = bank.optimal_lengths() > np.median(bank.optimal_lengths())
    pc = pacing(p.actions)["pacing"]
    out["pacing_hard_minus_easy"] = float(pc[hard].mean() - pc[~hard].mean())
    labels = plan_labels(p, horizon)
    rand = record_on_observations(make_agent("drc", cfg, seed=1000 + seed), p.obs, p.live, names)
    top = names[-1]
    for target in ("agent", "box"):
        for nm in names:
            f, y, g = square_rows(p.acts[nm], labels[target], p)
            out[f"f1_{target}_{nm}"] = fit_square_probe(f, y, g, seed=seed, epochs=probe_epochs).f1
        f, y, g = square_rows(obs_features(p.obs), labels[target], p)
        out[f"f1_{target}_obs"] = fit_square_probe(f, y, g, seed=seed, epochs=probe_epochs).f1
        f, y, g = square_rows(rand[top], labels[target], p)
        out[f"f1_{target}_random_init"] = fit_square_probe(f, y, g, seed=seed, epochs=probe_epochs).f1
    # the conv baseline on its own episodes, at its two convolution layers
    q = play(conv, bank, record=("convs.0.hook_post", "convs.1.hook_post"), keep_obs=True, greedy=False, seed=seed)
    lq = plan_labels(q, horizon)
    for nm in ("convs.0.hook_post", "convs.1.hook_post"):
        f, y, g = square_rows(q.acts[nm], lq["agent"], q)
        out[f"f1_agent_conv_{nm}"] = fit_square_probe(f, y, g, seed=seed, epochs=probe_epochs).f1
    # intervention: the top layer's agent-direction probe
    f, y, g = square_rows(p.acts[top], labels["agent"], p)
    probe = fit_square_probe(f, y, g, seed=seed, epochs=probe_epochs)
    dirs = torch.stack([probe.direction(c) for c in range(1, 5)])
    norm = float(p.acts[top].norm(dim=2).mean())
    for mult in steer_scales:
        st = steer_first_move(drc, bank, dirs, drc.depth - 1, mult * norm, seed=seed)
        out[f"steer_x{mult}_probe"] = float(st["probe"][st["valid"]].mean())
        out[f"steer_x{mult}_random"] = float(st["random"][st["valid"]].mean())
    base = p.solve_rate
    out["solve_base"] = base
    out["solve_ablate_probe"] = ablate_subspace(drc, bank, dirs, drc.depth - 1, greedy=False, seed=seed).solve_rate
    out["solve_ablate_random"] = ablate_subspace(drc, bank, random_basis(4, drc.channels, seed), drc.depth - 1,
                                                 greedy=False, seed=seed).solve_rate
    out["random_policy"] = play(make_agent("drc", cfg, seed=2000 + seed), bank, greedy=False, seed=seed).solve_rate
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--margin", type=float, default=0.05, help="TOST margin for 'no thinking effect' (solve rate)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bank = heldout_bank(TrainConfig(), args.levels)
    res = [seed_measurements(s, bank) for s in args.seeds]
    iv = seed_interval if len(res) > 1 else seed_summary
    print(f"{args.levels} held-out levels, seeds {args.seeds}; intervals: 95% t over training seeds")
    for kind in ("drc", "conv"):
        for k in THINK_STEPS:
            print(f"solve rate {kind} think={k}: {fmt_interval(iv([r[f'think_{kind}'][k] for r in res]))}")
    gain = [max(r["think_drc"][k] for k in THINK_STEPS[1:]) - r["think_drc"][0] for r in res]
    gain8 = [r["think_drc"][8] - r["think_drc"][0] for r in res]
    print(f"DRC best-of-extra minus 0 steps: {fmt_interval(iv(gain))}; 8 minus 0: {fmt_interval(iv(gain8))}")
    if len(res) > 1:
        print(f"TOST (8 minus 0 thinking steps, margin {args.margin}): {tost_equivalence(np.array(gain8), args.margin)}")
    keys = [k for k in res[0] if not k.startswith("think_")]
    for k in keys:
        print(f"{k}: {fmt_interval(iv([r[k] for r in res]))}")
    print(f"report took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
