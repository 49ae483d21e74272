"""Chapter 08's measurements on the released DRC(3,3) of Taufeeque et al. (2024), on Boxoban-like
10 x 10 rooms with four boxes generated offline (`LevelBank(..., size=10, n_boxes=4, optimal=False)`).

`measure_released(drc, bank)` runs the chapter's protocol on one agent: the thinking-time curve
(greedy play, k extra steps before the first move), pacing at the start of each episode, the
anchors' plan probe on the top layer scored by distance from the agent against the
observation-only probe and the same probe on randomly initialised DRC(3,3)s, and route steering
away from the agent (own content against a decoy move's content on the same squares) against
variance-matched random directions. There is one released agent, so
every interval is over levels (a bootstrap over levels), not over training seeds.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from utils.envs.sokoban import LevelBank
from utils.interp.controls import variance_matched_random
from utils.planning.intervene import steer_away
from utils.planning.play import THINK_STEPS, pacing, play, thinking_curve
from utils.planning.probes import obs_features, plan_probe_by_distance, record_on_observations
from utils.stats import bootstrap_ci


def _boot(x: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """`utils.stats.bootstrap_ci` over levels, NaN when there is no level to resample."""
    x = np.asarray(x, float)
    return bootstrap_ci(x, seed=seed) if len(x) else (float("nan"),) * 3


def released_bank(n: int, seed: int = 0, min_moves: int = 15, reverse_steps: int = 150) -> LevelBank:
    """Held-out Boxoban-like rooms: 10 x 10, four boxes, solvable by construction (no optimum)."""
    return LevelBank(n, "test", seed=seed, size=10, n_boxes=4, min_moves=min_moves, reverse_steps=reverse_steps,
                     optimal=False)


def measure_released(drc: nn.Module, bank: LevelBank, max_steps: int = 120, think_steps=THINK_STEPS,
                     probe_epochs: int = 150, steer_scale: float = 4.0, n_random_init: int = 2,
                     seed: int = 0, progress=print) -> dict:
    """The chapter's measurements on one released agent (module docstring). Returns a dict of
    {name: (mean, low, high)} intervals over levels plus the raw per-level arrays."""
    out: dict = {}
    curve = thinking_curve(drc, bank, think_steps, max_steps=max_steps, greedy=True, seed=seed)
    out["thinking"] = {k: _boot(v, seed=seed) for k, v in curve.items()}
    k_hi, k_lo = max(think_steps), min(think_steps)
    out["thinking_gain"] = _boot(curve[k_hi].astype(float) - curve[k_lo].astype(float), seed=seed)
    progress(f"released DRC: thinking curve done ({len(bank)} levels)")
    top = drc.hook_name("h", drc.depth - 1, drc.ticks - 1)
    p = play(drc, bank, record=(top,), keep_obs=True, max_steps=max_steps, greedy=True, seed=seed)
    pc = pacing(p.actions)["pacing"]
    later = pacing(np.where(p.actions[:, 5:] >= 0, p.actions[:, 5:], -1))["pacing"]   # steps 5-9
    out["pacing_start"], out["pacing_later"] = _boot(pc, seed=seed), _boot(later, seed=seed)
    out["pacing_start_minus_later"] = _boot(pc - later, seed=seed)
    probe, table = plan_probe_by_distance(p, p.acts[top], seed=seed, epochs=probe_epochs)
    out["probe"] = {k: (v["f1"], v["low"], v["high"]) for k, v in table.items()}
    _, obs_table = plan_probe_by_distance(p, obs_features(p.obs), seed=seed, epochs=probe_epochs)
    out["probe_obs"] = {k: (v["f1"], v["low"], v["high"]) for k, v in obs_table.items()}
    rand = []
    for r in range(n_random_init):
        torch.manual_seed(7000 + r)
        ctrl = type(drc)().eval()
        acts = record_on_observations(ctrl, p.obs, p.live, (top,))[top]
        rand.append(plan_probe_by_distance(p, acts, seed=seed, epochs=probe_epochs)[1]["1+"]["f1"])
    out["probe_random_init_away"] = rand
    progress("released DRC: probes done")
    dirs = torch.stack([probe.direction(c) for c in range(1, 5)])
    h = p.acts[top][torch.as_tensor(p.live)].movedim(1, -1).reshape(-1, drc.channels)
    h = h[torch.randperm(len(h), generator=torch.Generator().manual_seed(seed))[:20000]]
    matched = variance_matched_random(h.float(), 4, seed=500 + seed).T.contiguous()
    norm = float(p.acts[top].norm(dim=2)[torch.as_tensor(p.live)].mean())
    st = steer_away(drc, bank, dirs, drc.depth - 1, steer_scale * norm, controls={"matched": matched}, start=2,
                    length=4, seed=seed)
    ok = st["valid"]
    out["steer_away"] = {k: _boot(st[k][ok].astype(float), seed=seed)
                         for k in ("probe", "probe_decoy", "matched", "matched_decoy", "isotropic")}
    spec = {k: st[k][ok].astype(float) - st[f"{k}_decoy"][ok].astype(float) for k in ("probe", "matched")}
    out["steer_away_specific"] = {k: _boot(v, seed=seed) for k, v in spec.items()}
    out["steer_away_diff"] = _boot(spec["probe"] - spec["matched"], seed=seed)
    out["n_levels"], out["n_steer_levels"] = len(bank), int(ok.sum())
    out["solved"] = curve[k_lo]
    return out
