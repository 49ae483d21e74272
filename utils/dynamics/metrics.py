"""Metrics of a network that can be computed at every checkpoint, and comparisons between two
networks (teacher and clone, actor and critic). Each is the reference of an exercise of
chapter 09; every interval comes from utils.stats.

- weights: `effective_rank` (Roy and Vetterli's entropy rank of the singular values);
- causal: `unit_ablation_effect` (mean-ablate one unit, KL of the policy), `heldout_topk_recovery`
  (patching units chosen on discovery pairs, scored on test pairs), `steering_effect` (beside a
  norm-matched random direction);
- representational: `probe_over_checkpoints` (grouped split, shuffled-label baseline),
  `linear_cka`, `match_units`, `fit_affine_map` (stitching one network's features into another);
- over training: `onset` (when a metric first covers half of its change), `vestigial_units`,
  `inert_units`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from transformer_lens import HookedRootModule

from utils.core import CourseError
from utils.interp.hooks import cache_activations, check_names
from utils.interp.patching import heldout_unit_patching
from utils.interp.probes import probe_with_baselines
from utils.interp.steering import add_hook, norm_matched_random


# ------------------------------------------------------------------ weights
def effective_rank(W: Tensor) -> float:
    """exp(entropy of the normalised singular values p_i = s_i / sum_j s_j) of a 2-D matrix:
    between 1 (rank one) and min(W.shape) (all singular values equal); 0 for a zero matrix."""
    W = torch.as_tensor(W).detach().double()
    if W.ndim != 2:
        raise CourseError(f"effective_rank needs a 2-D matrix, got shape {tuple(W.shape)}")
    s = torch.linalg.svdvals(W)
    if float(s.sum()) <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


# ------------------------------------------------------------------ causal effects
def _mean_ablate(mean: Tensor, unit: int):
    def hook(act, hook):
        act = act.clone()
        act[..., unit] = mean[unit]
        return act
    return hook


@torch.no_grad()
def unit_ablation_effect(model: HookedRootModule, layer: str, states: Tensor) -> Tensor:
    """[d]: for each unit u of `layer`, the mean over `states` of KL(pi(.|s) || pi_u(.|s)), where
    pi_u is the policy with unit u replaced by its mean activation over `states` (mean ablation).
    0 for a unit the policy does not use; larger = more causal."""
    check_names(model, [layer])
    acts = cache_activations(model, states, [layer])[layer]
    mean = acts.mean(0)
    logp = torch.log_softmax(model(states), -1)
    out = torch.zeros(acts.shape[-1])
    for u in range(acts.shape[-1]):
        logq = torch.log_softmax(model.run_with_hooks(states, fwd_hooks=[(layer, _mean_ablate(mean, u))]), -1)
        out[u] = (logp.exp() * (logp - logq)).sum(-1).mean()
    return out


def heldout_topk_recovery(model: HookedRootModule, pairs: dict[str, Tensor], layer: str, k: int = 16,
                          seed: int = 0) -> tuple[float, float, float]:
    """(fraction, low, high): the fraction of the clean-minus-corrupt logit difference that the k
    units of `layer` with the largest single-unit patching scores on DISCOVERY pairs recover on the
    held-out TEST pairs, with a bootstrap CI over test pairs (utils.interp.patching)."""
    return heldout_unit_patching(model, pairs, layer, k=k, seed=seed)["top_ci"]


@torch.no_grad()
def steering_effect(model: HookedRootModule, layer: str, states: Tensor, direction: Tensor, action: int,
                    scales: Sequence[float] = (1.0,), seed: int = 0) -> tuple[Tensor, Tensor]:
    """(effect [n_scales], random_effect [n_scales]): the change in the mean probability of `action`
    over `states` when scale * `direction` is added at `layer`, and the same for a random direction
    of the same norm (`norm_matched_random(direction, seed)`, the control)."""
    check_names(model, [layer])
    base = torch.softmax(model(states), -1)[:, action].mean()
    rand = norm_matched_random(direction, seed)
    eff = []
    for d in (direction, rand):
        eff.append(torch.tensor([float(torch.softmax(model.run_with_hooks(states, fwd_hooks=[(layer, add_hook(d, s))]),
                                                     -1)[:, action].mean() - base) for s in scales]))
    return eff[0], eff[1]


# ------------------------------------------------------------------ representations
def probe_over_checkpoints(models: Sequence[HookedRootModule], states: Tensor, labels: Tensor, groups: Tensor,
                           layer: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A linear probe for `labels` on `layer` of every model (one per checkpoint), split by
    `groups` (episodes: no episode on both sides) with `probe_with_baselines`. Returns arrays over
    checkpoints: acc, lo, hi (95% interval, unit = test groups) and shuffled (shuffled labels)."""
    if len(models) == 0:
        raise CourseError("no checkpoints to probe: the model list is empty")
    out = {k: [] for k in ("acc", "lo", "hi", "shuffled")}
    for m in models:
        acts = cache_activations(m, states, [layer])[layer]
        rep = probe_with_baselines(acts, labels, seed=seed, groups=groups)
        for k, v in zip(out, (rep.probe.test_acc, *rep.probe.test_ci, rep.shuffled.test_acc)):
            out[k].append(v)
    return {k: np.asarray(v, float) for k, v in out.items()}


def _centre(X: Tensor) -> Tensor:
    X = torch.as_tensor(X).detach().double()
    return X - X.mean(0, keepdim=True)


def linear_cka(X: Tensor, Y: Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between activations X [n, d1] and
    Y [n, d2] of the same n inputs: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with columns
    centred. In [0, 1]; invariant to rotations and isotropic scaling of either; 0 if either is
    constant."""
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise CourseError(f"linear_cka needs X [n, d1] and Y [n, d2] over the same inputs, got "
                          f"{tuple(X.shape)} and {tuple(Y.shape)}")
    Xc, Yc = _centre(X), _centre(Y)
    nx, ny = torch.linalg.norm(Xc.T @ Xc), torch.linalg.norm(Yc.T @ Yc)
    if float(nx) == 0 or float(ny) == 0:
        return 0.0
    return float(torch.linalg.norm(Yc.T @ Xc) ** 2 / (nx * ny))


def match_units(acts_a: Tensor, acts_b: Tensor) -> tuple[Tensor, Tensor]:
    """For each unit of A (columns of acts_a [n, da]), the unit of B (acts_b [n, db]) whose
    activations correlate most strongly with it, by |Pearson r| over the n inputs.
    Returns (index [da] long, r [da] signed correlation of the match); a constant (dead) unit has
    r = 0 with everything."""
    if acts_a.ndim != 2 or acts_b.ndim != 2 or len(acts_a) != len(acts_b):
        raise CourseError(f"match_units needs acts [n, da] and [n, db] over the same inputs, got "
                          f"{tuple(acts_a.shape)} and {tuple(acts_b.shape)}")
    A, B = _centre(acts_a), _centre(acts_b)
    A = A / A.norm(dim=0, keepdim=True).clamp_min(1e-12)
    B = B / B.norm(dim=0, keepdim=True).clamp_min(1e-12)
    r = A.T @ B                                   # [da, db]
    idx = r.abs().argmax(1)
    return idx, r.gather(1, idx[:, None]).squeeze(1).float()


def fit_affine_map(src: Tensor, dst: Tensor, ridge: float = 1e-3) -> tuple[Tensor, Tensor]:
    """(W [d_src, d_dst], b [d_dst]) minimising ||src @ W + b - dst||^2 + ridge ||W||^2 over the
    rows (the bias is not penalised): a linear "stitch" from one network's features to another's."""
    if src.ndim != 2 or dst.ndim != 2 or len(src) != len(dst):
        raise CourseError(f"fit_affine_map needs src [n, d1] and dst [n, d2], got {tuple(src.shape)}, {tuple(dst.shape)}")
    S, D = torch.as_tensor(src).detach().double(), torch.as_tensor(dst).detach().double()
    ms, md = S.mean(0), D.mean(0)
    Sc, Dc = S - ms, D - md
    W = torch.linalg.solve(Sc.T @ Sc + ridge * torch.eye(S.shape[1], dtype=S.dtype), Sc.T @ Dc)
    return W.float(), (md - ms @ W).float()


# ------------------------------------------------------------------ over training
def onset(x: Sequence[float], values: Sequence[float], frac: float = 0.5) -> float:
    """The first x (e.g. env steps) at which `values` has covered `frac` of its change from the
    first to the last value (linear interpolation between points); nan if it never changes."""
    x, v = np.asarray(x, float), np.asarray(values, float)
    if len(x) != len(v) or len(x) < 2:
        raise CourseError(f"onset needs x and values of the same length >= 2, got {len(x)} and {len(v)}")
    ok = np.isfinite(v)
    x, v = x[ok], v[ok]
    if len(v) < 2 or abs(v[-1] - v[0]) < 1e-12:
        return float("nan")
    prog = (v - v[0]) / (v[-1] - v[0])
    i = int(np.argmax(prog >= frac))
    if i == 0:
        return float(x[0])
    t = (frac - prog[i - 1]) / (prog[i] - prog[i - 1])
    return float(x[i - 1] + t * (x[i] - x[i - 1]))


def _relative(effect: Tensor) -> Tensor:
    top = effect.max(-1, keepdim=True).values
    return torch.where(top > 0, effect / top.clamp_min(1e-30), torch.zeros_like(effect))


def inert_units(effect_final: Tensor, variance_final: Tensor, low: float = 0.1) -> Tensor:
    """bool [d]: units that are ACTIVE (activation variance at or above the layer's median,
    `variance_final.median()`) but have little causal effect (ablation effect below `low` times the
    layer's largest)."""
    return (variance_final >= variance_final.median()) & (_relative(effect_final) < low)


def vestigial_units(effects: Tensor, variance_final: Tensor, low: float = 0.1, high: float = 0.5) -> Tensor:
    """bool [d]: the "vestigial organs" of a network over training. `effects` [n_ckpt, d] holds a
    causal effect per unit at each checkpoint (the last row is the final network; leave the
    random-init checkpoint out), `variance_final` [d] the final activation variance. A unit is
    vestigial when it is inert at the end (`inert_units`) but, at some EARLIER checkpoint, its
    effect was at least `high` times the largest effect in the layer at that checkpoint."""
    effects = torch.as_tensor(effects).float()
    if effects.ndim != 2 or effects.shape[0] < 2 or effects.shape[1] != len(variance_final):
        raise CourseError(f"vestigial_units needs effects [n_ckpt >= 2, d] and variance [d], got "
                          f"{tuple(effects.shape)} and {tuple(variance_final.shape)}")
    rel = _relative(effects)
    was_strong = (rel[:-1] >= high).any(0)
    return inert_units(effects[-1], torch.as_tensor(variance_final).float(), low) & was_strong


@torch.no_grad()
def policy_entropy(model: HookedRootModule, states: Tensor) -> float:
    """Mean entropy (nats) of the policy's action distribution over `states`."""
    logp = torch.log_softmax(model(states), -1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def dormant_fraction(acts: Tensor, tau: float = 0.1) -> float:
    """Sokar et al. (2023): the fraction of units whose mean |activation| over the inputs, divided by
    the layer's average of that quantity, is at most `tau` ("tau-dormant"). acts: [n, d]."""
    score = acts.abs().mean(0)
    mean = score.mean()
    if float(mean) == 0:
        return 1.0
    return float((score / mean <= tau).float().mean())


# ---------------------------------------------------------------- competence, resolution, circuits
def first_competent(success: Sequence[float], chance: float, n_eval: int, z: float = 1.96) -> int | None:
    """Index of the first checkpoint whose greedy success rate (over `n_eval` episodes) has left
    chance: the lower end of its Wilson interval lies above `chance`. None if no checkpoint does.
    Vestigial organs are counted only from this checkpoint on: a unit that mattered while the agent
    still played at chance was important to a policy that did not yet do the task."""
    from utils.stats import wilson_ci

    s = np.asarray(success, float)
    if s.ndim != 1 or len(s) == 0 or not 0 <= chance < 1 or n_eval < 1:
        raise CourseError(f"first_competent needs a 1-D success series, 0 <= chance < 1 and n_eval >= 1, got shape "
                          f"{s.shape}, chance {chance}, n_eval {n_eval}")
    for i, rate in enumerate(s):
        if wilson_ci(int(round(rate * n_eval)), n_eval, z)[1] > chance:
            return i
    return None


def count_vestigial(effects: Tensor, variance_final: Tensor, start: int, low: float = 0.1,
                    high: float = 0.5) -> int:
    """The number of vestigial units when only checkpoints `start`.. (the first competent one on)
    count as "earlier": `vestigial_units(effects[start:], ...)`; 0 when fewer than two remain."""
    effects = torch.as_tensor(effects).float()
    if start is None or effects.shape[0] - start < 2:
        return 0
    return int(vestigial_units(effects[start:], variance_final, low, high).sum())


def onset_verdict(diffs: Sequence[float], spacing: float, alpha: float = 0.05,
                  span: float | None = None) -> tuple[tuple, str]:
    """Onset differences (metric minus success, log10 env steps, one per training seed) read at
    the checkpoint resolution, for the claim "the metric moves first". Returns (mean, low, high) of
    the 95% t-interval over seeds and a verdict: "held" when the whole interval lies below
    -spacing (first by more than one checkpoint spacing); "reversed (after by more than one
    spacing)" when it lies above +spacing; "within one checkpoint spacing (TOST)" when a TOST at
    margin `spacing` holds (the checkpoints cannot order them); else "not separated". `span`: the
    checkpoints' whole range in decades; an onset difference cannot leave [-span, span], and the
    interval is clipped to it."""
    from utils.stats import HELD, seed_summary, tost_equivalence

    d = np.asarray(diffs, float)
    d = d[np.isfinite(d)]
    if not spacing > 0:
        raise CourseError(f"spacing must be > 0 (one checkpoint spacing in decades), got {spacing}")
    if len(d) < 2:
        iv = (float(d[0]) if len(d) else float("nan"), float("nan"), float("nan"))
        return iv, "one seed, untested" if len(d) else "undefined"
    iv = seed_summary(d, None if span is None else (-span, span))
    if iv[2] < -spacing:
        return iv, HELD
    if iv[1] > spacing:
        return iv, "reversed (after by more than one spacing)"
    if tost_equivalence(d, spacing, alpha=alpha).verdict == "equivalent":
        return iv, "within one checkpoint spacing (TOST)"
    return iv, "not separated"


def circuit_share(effects: Tensor, units: Sequence[int] | Tensor) -> float:
    """A progress measure built from the final circuit: the share of a layer's total causal effect
    (per-unit effects [d], e.g. mean-ablation KL at one checkpoint) carried by `units` (the final
    circuit's units). k / d when effects are spread evenly; nan when the layer has no effect."""
    e = torch.as_tensor(effects).double().clamp_min(0)
    total = float(e.sum())
    return float(e[torch.as_tensor(units, dtype=torch.long)].sum() / total) if total > 0 else float("nan")


@torch.no_grad()
def random_units_recovery(model: HookedRootModule, pairs: dict[str, Tensor], layer: str, k: int,
                          seed: int = 0, n_sets: int = 1) -> float:
    """The control of held-out top-k patching without a single-unit sweep: the mean fraction of the
    logit difference recovered on the TEST half of `split_pairs(pairs, seed)` by `n_sets` sets of k
    random units of `layer` (drawn from a local generator seeded `seed + 1`)."""
    from utils.interp.attribution import logit_diff
    from utils.interp.hooks import cache_activations
    from utils.interp.patching import run_patched, split_pairs
    from utils.stats import fraction_recovered_ci

    _, test = split_pairs(pairs, seed)
    act = cache_activations(model, test["clean"], [layer])[layer]
    d = act.shape[-1]
    if not 1 <= k <= d:
        raise CourseError(f"k must be in 1..{d} for {layer}, got {k}")
    g = torch.Generator().manual_seed(seed + 1)
    metric = lambda lg: logit_diff(lg, test["a_clean"], test["a_corrupt"])  # noqa: E731
    m_clean, m_corrupt = metric(model(test["clean"])), metric(model(test["corrupt"]))
    out = []
    for _ in range(n_sets):
        units = torch.randperm(d, generator=g)[:k]
        patched = metric(run_patched(model, test["corrupt"], layer, act, units.tolist()))
        out.append(fraction_recovered_ci(patched, m_clean, m_corrupt, n_boot=2, seed=seed)[0])
    return float(np.mean(out))


@torch.no_grad()
def clone_circuit_in_teacher(clone: HookedRootModule, teacher: HookedRootModule, pairs: dict[str, Tensor],
                             layer: str, k: int = 4, seed: int = 0, n_random: int = 20) -> dict:
    """Find the clone's circuit in the teacher (problem 8.19). On the DISCOVERY half of
    `split_pairs(pairs, seed)`: the clone's k units of `layer` with the largest single-unit patching
    score (clean -> corrupt, mean logit difference logit[a_clean] - logit[a_corrupt]); each is
    matched to the teacher unit of `layer` whose activation correlates most (|Pearson r|,
    `match_units`) over the discovery inputs (clean and corrupt stacked); duplicates merged. On
    the TEST half: the fraction of the teacher's logit difference recovered by patching those
    teacher units together (clean -> corrupt), and the mean over `n_random` sets of as many random
    teacher units (local generator seeded `seed + 1`). Returns {"clone_units" [k], "teacher_units"
    [m] (sorted), "matched": float, "random": float}."""
    from utils.interp.attribution import logit_diff
    from utils.interp.hooks import cache_activations
    from utils.interp.patching import patching_sweep, run_patched, split_pairs
    from utils.stats import fraction_recovered_ci

    disc, test = split_pairs(pairs, seed)
    ld = lambda p: lambda lg: logit_diff(lg, p["a_clean"], p["a_corrupt"])  # noqa: E731
    score = ld(disc)
    single = patching_sweep(clone, disc["clean"], disc["corrupt"], [layer], lambda lg: score(lg).mean(),
                            per_unit=True)[layer]
    if not 1 <= k <= len(single):
        raise CourseError(f"k must be in 1..{len(single)} (the clone's width at {layer}), got {k}")
    clone_units = torch.argsort(single, descending=True)[:k]
    inputs = torch.cat([disc["clean"], disc["corrupt"]])
    c_acts = cache_activations(clone, inputs, [layer])[layer][:, clone_units]
    t_acts = cache_activations(teacher, inputs, [layer])[layer]
    idx, _ = match_units(c_acts, t_acts)
    teacher_units = torch.unique(idx)
    act = cache_activations(teacher, test["clean"], [layer])[layer]
    metric = ld(test)
    m_clean, m_corrupt = metric(teacher(test["clean"])), metric(teacher(test["corrupt"]))

    def frac(units):
        patched = metric(run_patched(teacher, test["corrupt"], layer, act, units.tolist()))
        return fraction_recovered_ci(patched, m_clean, m_corrupt, n_boot=2, seed=seed)[0]

    g = torch.Generator().manual_seed(seed + 1)
    d, m = t_acts.shape[1], len(teacher_units)
    rand = [frac(torch.randperm(d, generator=g)[:m]) for _ in range(n_random)]
    return {"clone_units": clone_units, "teacher_units": teacher_units, "matched": float(frac(teacher_units)),
            "random": float(np.mean(rand))}


@torch.no_grad()
def value_ablation_effect(model: HookedRootModule, layer: str, states: Tensor) -> Tensor:
    """[d]: for each unit u of `layer` in a network with a value head (`forward_both`), the mean over
    `states` of |V(s) - V_u(s)|, with unit u replaced by its mean activation over `states`: what
    the critic reads from each unit (the value-side twin of `unit_ablation_effect`)."""
    v = model.forward_both(states)[1] if hasattr(model, "forward_both") else None
    if v is None:
        raise CourseError("value_ablation_effect needs a network with a value head (forward_both returning a value)")
    check_names(model, [layer])
    mean = cache_activations(model, states, [layer])[layer].mean(0)
    out = torch.zeros(len(mean))
    for u in range(len(mean)):
        with model.hooks(fwd_hooks=[(layer, _mean_ablate(mean, u))]):
            out[u] = (model.forward_both(states)[1] - v).abs().mean()
    return out
