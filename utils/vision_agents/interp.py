"""Interpreting a conv agent on MinAtar Breakout: attribution checked by interventions, probes
per layer, and spatial patching between two frames.

- `gradient_x_input`, `integrated_gradients`: per-channel, per-cell attribution [B, C, 10, 10]
  of the policy's centred logit of one action (logit minus the mean logit).
- `object_attribution`: the attribution summed over an object's cells (ball + trail, paddle,
  bricks), and `intervention_effects`: how much the action distribution moves (total
  variation) when the ball or the paddle is moved in the grid. `attribution_vs_intervention`
  correlates the two over states (Spearman), beside the control of the same correlation
  with the states' attributions shuffled, with bootstrap intervals over states.
- `subspace_patching`: for ball-moved frame pairs whose greedy action differs, patch one
  layer's activations from the clean frame into the moved frame only inside a subspace (the
  class means of "where the paddle should go", or of the ball's column), beside random
  subspaces of the same rank (the control), and measure the fraction of the logit
  difference recovered: the layer where the target subspace carries the action change is
  where ball position has become paddle target.
- `layer_probes`: held-out probe accuracy of game variables at every layer, with the
  random-init network, shuffled labels and majority class, split by episode.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import rankdata
import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.minatar import check_frame
from utils.interp.hooks import cache_activations
from utils.interp.probes import probe_with_controls
from utils.stats import bootstrap_statistic
from utils.vision_agents.games import frames, move_ball, move_paddle

OBJECTS = ("ball", "paddle", "bricks")


def centred_logit(logits: Tensor, action: Tensor) -> Tensor:
    """logit[action] - mean logit, per row [B] (the policy's preference for `action`)."""
    return logits.gather(1, action.long().view(-1, 1)).squeeze(1) - logits.mean(-1)


def gradient_x_input(net, obs: Tensor, action: Tensor) -> Tensor:
    """Gradient x input [B, C, 10, 10] of the centred logit of `action` (one action per row)."""
    x = check_frame(obs, net.obs_shape[0]).clone().requires_grad_(True)
    with torch.enable_grad():
        centred_logit(net(x), action).sum().backward()
    return (x.grad * x).detach()


def integrated_gradients(net, obs: Tensor, action: Tensor, baseline: Tensor | None = None, steps: int = 32) -> Tensor:
    """Integrated gradients [B, C, 10, 10] of the centred logit of `action` from `baseline`
    (default: the empty grid) to `obs`, with a `steps`-point midpoint Riemann sum. The
    attributions sum to f(obs) - f(baseline) (completeness) up to the discretisation."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise CourseError(f"steps must be a positive int, got {steps!r}")
    x = check_frame(obs, net.obs_shape[0])
    base = torch.zeros_like(x) if baseline is None else check_frame(baseline, net.obs_shape[0]).expand_as(x)
    total = torch.zeros_like(x)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        xi = (base + alpha * (x - base)).requires_grad_(True)
        with torch.enable_grad():
            centred_logit(net(xi), action).sum().backward()
        total += xi.grad
    return (x - base) * total / steps


def object_masks(state: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """Bool masks [n, 4, 10, 10] of each object's cells: ball (ball and trail channels), paddle, bricks."""
    n = len(state["pos"])
    idx = np.arange(n)
    ball = torch.zeros(n, 4, 10, 10, dtype=torch.bool)
    ball[idx, 1, state["ball_y"], state["ball_x"]] = True
    ball[idx, 2, state["last_y"], state["last_x"]] = True
    paddle = torch.zeros(n, 4, 10, 10, dtype=torch.bool)
    paddle[idx, 0, 9, state["pos"]] = True
    bricks = torch.zeros(n, 4, 10, 10, dtype=torch.bool)
    bricks[:, 3] = torch.as_tensor(np.asarray(state["bricks"], bool))
    return {"ball": ball, "paddle": paddle, "bricks": bricks}


def object_attribution(attr: Tensor, state: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """|attribution| summed over each object's cells: {object: [n]}."""
    masks = object_masks(state)
    if attr.shape != masks["ball"].shape:
        raise CourseError(f"attribution must have shape {tuple(masks['ball'].shape)} (one frame per state), got {tuple(attr.shape)}")
    return {k: (attr.abs() * m).flatten(1).sum(1) for k, m in masks.items()}


def total_variation(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Total-variation distance [B] between the action distributions of two logit batches."""
    return 0.5 * (torch.softmax(logits_a, -1) - torch.softmax(logits_b, -1)).abs().sum(-1)


@torch.no_grad()
def intervention_effects(net, state: dict[str, np.ndarray], shift: int = 2) -> dict[str, Tensor]:
    """{object: [n]} the total variation of the action distribution when the object is moved
    `shift` columns (the mean of moving it left and right, where it stays on the grid; bricks
    are replaced by the brick layout of another state). NaN where no move is possible."""
    base = net(frames(state))
    out = {}
    for name, mover in (("ball", move_ball), ("paddle", move_paddle)):
        effects, counts = torch.zeros(len(base)), torch.zeros(len(base))
        for dx in (-shift, shift):
            moved, ok = mover(state, dx)
            tv = total_variation(base, net(frames(moved)))
            ok = torch.as_tensor(ok)
            effects += torch.where(ok, tv, torch.zeros_like(tv))
            counts += ok.float()
        out[name] = torch.where(counts > 0, effects / counts.clamp_min(1), torch.full_like(effects, float("nan")))
    other = {k: np.array(v, copy=True) for k, v in state.items()}
    other["bricks"] = np.roll(np.asarray(state["bricks"]), 1, axis=0)
    out["bricks"] = total_variation(base, net(frames(other)))
    return out


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of a and b along the last axis, ties given their average rank
    (`scipy.stats.rankdata`). Breaking ties by order would bias a bootstrap: a resample repeats
    rows, and each repeated (a, b) pair would get adjacent ranks in both columns, a spurious
    positive correlation that can push the bootstrap interval off the estimate."""
    ra = rankdata(a, axis=-1).astype(float)
    rb = rankdata(b, axis=-1).astype(float)
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    return (ra * rb).sum(-1) / np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1) + 1e-12)


def attribution_vs_intervention(attr: dict[str, Tensor], effect: dict[str, Tensor], seed: int = 0,
                                n_boot: int = 1000) -> list[dict]:
    """Per object: Spearman correlation over states between the object's |attribution| and the
    effect of intervening on it, with a bootstrap 95% interval over states, beside the control
    (the same correlation after shuffling which state each attribution belongs to). `agrees`:
    the interval lies above the control's interval."""
    rows = []
    rng = np.random.default_rng(seed)
    for obj in effect:
        a, e = attr[obj].numpy().astype(float), effect[obj].numpy().astype(float)
        keep = np.isfinite(a) & np.isfinite(e)
        a, e = a[keep], e[keep]
        if len(a) < 8:
            raise CourseError(f"{obj}: fewer than 8 states with a valid intervention; collect more frames")
        stat = lambda x, y: spearman_rows(x, y)  # noqa: E731
        r, lo, hi = bootstrap_statistic(stat, a, e, n_boot=n_boot, seed=seed)
        c, clo, chi = bootstrap_statistic(stat, rng.permutation(a), e, n_boot=n_boot, seed=seed + 1)
        rows.append({"object": obj, "spearman": r, "low": lo, "high": hi, "control": c, "control_low": clo,
                     "control_high": chi, "agrees": lo > chi, "n_states": int(len(a))})
    return rows


@torch.no_grad()
def ball_pairs(net, state: dict[str, np.ndarray], shifts=(-3, -2, -1, 1, 2, 3)) -> dict:
    """Clean / moved-ball frame pairs on which the greedy action changes: {"clean", "corrupt" [m, 400],
    "a_clean", "a_corrupt" [m], "clean_state", "corrupt_state" (dicts of [m] arrays)}."""
    out = {"clean": [], "corrupt": [], "cs": [], "ks": []}
    base = frames(state)
    a0 = net(base).argmax(-1)
    for dx in shifts:
        moved, ok = move_ball(state, dx)
        mf = frames(moved)
        a1 = net(mf).argmax(-1)
        keep = torch.as_tensor(ok) & (a1 != a0)
        idx = np.flatnonzero(keep.numpy())
        out["clean"].append(base[idx])
        out["corrupt"].append(mf[idx])
        out["cs"].append({k: v[idx] for k, v in state.items()})
        out["ks"].append({k: v[idx] for k, v in moved.items()})
    clean, corrupt = torch.cat(out["clean"]), torch.cat(out["corrupt"])
    if len(clean) < 4:
        raise CourseError("fewer than 4 ball moves change the greedy action: collect more frames")
    cs = {k: np.concatenate([d[k] for d in out["cs"]]) for k in state}
    ks = {k: np.concatenate([d[k] for d in out["ks"]]) for k in state}
    return {"clean": clean, "corrupt": corrupt, "a_clean": net(clean).argmax(-1), "a_corrupt": net(corrupt).argmax(-1),
            "clean_state": cs, "corrupt_state": ks}


def class_mean_subspace(acts: Tensor, labels: Tensor | np.ndarray) -> Tensor:
    """An orthonormal basis [d, k-1] of the span of the class means minus the overall mean (k classes):
    the directions along which the activations [n, d] encode the label on average."""
    acts = acts.flatten(1).double()
    labels = torch.as_tensor(np.asarray(labels)).long()
    if len(acts) != len(labels):
        raise CourseError(f"acts and labels differ in length: {len(acts)} vs {len(labels)}")
    classes = torch.unique(labels)
    if len(classes) < 2:
        raise CourseError("class_mean_subspace needs at least two classes")
    mu = acts.mean(0)
    diffs = torch.stack([acts[labels == c].mean(0) - mu for c in classes])  # [k, d]
    q, r = torch.linalg.qr(diffs.T)
    keep = r.diagonal().abs() > 1e-8 * r.diagonal().abs().max()
    return q[:, keep][:, : len(classes) - 1].float()


def random_subspace(d: int, k: int, seed: int) -> Tensor:
    """An orthonormal basis [d, k] of a random k-dimensional subspace (the control of a subspace patch)."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0].float()


def subspace_patch_hook(source: Tensor, basis: Tensor) -> Callable:
    """A hook that replaces the component of the activation in span(basis) by that of `source`
    (both flattened over all but the batch dimension): act + (source - act) Q Q^T."""
    def hook(act: Tensor, hook) -> Tensor:
        a = act.flatten(1)
        delta = (source.flatten(1).to(a.dtype) - a) @ basis.to(a.dtype)
        return (a + delta @ basis.T.to(a.dtype)).view_as(act)
    return hook


@torch.no_grad()
def subspace_patching(net, pairs: dict, bases: dict[str, dict[str, Tensor]], seed: int = 0, n_random: int = 5,
                      n_boot: int = 1000) -> list[dict]:
    """Patch, from the clean frame into the moved-ball frame, only the activation's component in
    a subspace: for every layer and named basis in `bases` ({layer: {name: Q [d, k]}}), and for
    `n_random` random subspaces of the same rank (the control, averaged). The score is the
    fraction of the logit difference logit[a_clean] - logit[a_corrupt] recovered, with a
    bootstrap 95% interval over pairs."""
    clean, corrupt, a, b = pairs["clean"], pairs["corrupt"], pairs["a_clean"], pairs["a_corrupt"]

    def metric(logits: Tensor) -> Tensor:
        return logits.gather(1, a.view(-1, 1)).squeeze(1) - logits.gather(1, b.view(-1, 1)).squeeze(1)

    m_clean, m_corrupt = metric(net(clean)), metric(net(corrupt))
    cache = cache_activations(net, clean, list(bases))
    rows = []
    for layer, named in bases.items():
        src = cache[layer]
        for name, q in named.items():
            patched = metric(net.run_with_hooks(corrupt, fwd_hooks=[(layer, subspace_patch_hook(src, q))]))
            rnd = torch.stack([metric(net.run_with_hooks(corrupt, fwd_hooks=[(layer, subspace_patch_hook(
                src, random_subspace(q.shape[0], q.shape[1], seed + 1000 * r)))])) for r in range(n_random)]).mean(0)
            row = _recovered_row(layer, name, patched, m_clean, m_corrupt, q.shape[1], seed, n_boot)
            ctrl = _recovered_row(layer, "random", rnd, m_clean, m_corrupt, q.shape[1], seed, n_boot)
            row.update(control=ctrl["recovered"], control_low=ctrl["low"], control_high=ctrl["high"],
                       beats_control=row["low"] > ctrl["high"])
            rows.append(row)
    return rows


def _recovered_row(layer, region, patched, clean, corrupt, size, seed, n_boot) -> dict:
    p, c, x = (t.numpy().astype(float) for t in (patched, clean, corrupt))
    stat = lambda p_, c_, x_: (p_.mean(-1) - x_.mean(-1)) / (c_.mean(-1) - x_.mean(-1))  # noqa: E731
    v, lo, hi = bootstrap_statistic(stat, p, c, x, n_boot=n_boot, seed=seed)
    return {"layer": layer, "subspace": region, "recovered": v, "low": lo, "high": hi, "rank": size}


def layer_probes(net, random_net, obs: Tensor, labels: dict[str, np.ndarray], groups: np.ndarray,
                 layers: list[str] | None = None, seed: int = 0, max_rows: int | None = None) -> list[dict]:
    """A probe table: for each game variable (labels: {name: [n] ints, -1 = not defined here})
    and each layer, the grouped held-out probe accuracy with its controls (`probe_with_controls`)."""
    layers = layers or net.layer_names()
    with torch.no_grad():
        acts = cache_activations(net, obs, layers)
        racts = cache_activations(random_net, obs, layers)
    rows = []
    for var, y in labels.items():
        y = np.asarray(y)
        keep = np.flatnonzero(y >= 0)
        if max_rows is not None and len(keep) > max_rows:
            keep = np.sort(np.random.default_rng(seed).choice(keep, max_rows, replace=False))
        if len(np.unique(y[keep])) < 2:
            print(f"{var}: a single class in these frames, not probed (collect more or longer episodes)")
            continue
        yk = torch.as_tensor(np.unique(y[keep], return_inverse=True)[1])
        for layer in layers:
            row = probe_with_controls(acts[layer][keep].flatten(1), yk, racts[layer][keep].flatten(1),
                                      groups=np.asarray(groups)[keep], seed=seed)
            rows.append({"variable": var, "layer": layer, **row})
    return rows


# ---------------------------------------------------------------- specificity of the patched subspace
PATCH_CLAIM = "target"
PADDLE_X = "nuisance: paddle x"


def terciles(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """Three equal groups (0, 1, 2) by rank, ties broken at random by `seed`."""
    v = np.asarray(values, float)
    v = v + np.random.default_rng(seed).uniform(0, 1e-3, len(v))
    return (np.argsort(np.argsort(v)) * 3 // len(v)).astype(np.int64)


def patching_bases(acts: dict[str, Tensor], target: np.ndarray, paddle_x: np.ndarray, seed: int,
                   fit: Callable = None) -> dict[str, dict[str, Tensor]]:
    """{layer: {name: basis [d, k]}}: at EVERY layer, the class-mean subspace of the paddle target
    ("target") and its specificity controls of the same rank k (`utils.interp.controls`): the
    same method on shuffled target labels, on the paddle's own column (terciles, three classes
    like the target), a variance-matched random subspace and the top principal components."""
    from utils.interp.controls import specificity_controls

    fit = fit or class_mean_subspace
    px = torch.as_tensor(terciles(paddle_x, seed))
    out = {}
    for layer, a in acts.items():
        spec = specificity_controls(fit, a.flatten(1), torch.as_tensor(np.asarray(target)), seed=seed,
                                    nuisance={"paddle x": px})
        out[layer] = {(PATCH_CLAIM if k == "claim" else k): q.float() for k, q in spec.items()}
    return out


def paired_controls_verdict(claim, controls: dict[str, list], larger: bool = True) -> tuple[str, list[str], dict]:
    """Claim [n_seeds] against each control [n_seeds] measured on the same seeds and data: the paired
    difference claim - control over seeds (`paired_difference`, unit seeds) for EVERY control.
    (verdict, controls not beaten, {control: difference interval}); 'held' only if every difference
    is held, 'reversed' if every one is reversed, 'one seed, untested' with one seed."""
    import math as _math

    from utils.stats import HELD, ordering_verdict, paired_difference

    claim = [float(v) for v in claim]
    if not controls:
        raise CourseError("paired_controls_verdict needs at least one control")
    if any(len(v) != len(claim) for v in controls.values()):
        raise CourseError(f"every control needs one value per seed, like the claim ({len(claim)})")
    if len(claim) < 2:
        diffs = {k: (claim[0] - float(v[0]), _math.nan, _math.nan) for k, v in controls.items()}
        return "one seed, untested", [], diffs
    diffs = {k: paired_difference(claim, [float(x) for x in v], unit="seeds") for k, v in controls.items()}
    verdicts = {k: ordering_verdict(d, [(0.0, 0.0, 0.0)], x_larger=larger) for k, d in diffs.items()}
    failed = [k for k, v in verdicts.items() if v != HELD]
    if not failed:
        return HELD, [], diffs
    if all(v == "reversed" for v in verdicts.values()):
        return "reversed", failed, diffs
    return "not separated", failed, diffs


# ---------------------------------------------------------------- perturbation saliency (Greydanus et al.)
def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Each channel of frames x [B, C, H, W] blurred by a Gaussian of std `sigma` cells (zero padding)."""
    if not sigma > 0:
        raise CourseError(f"sigma must be positive, got {sigma!r}")
    r = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k1 = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k1 = k1 / k1.sum()
    k = (k1[:, None] * k1[None, :])[None, None].repeat(x.shape[1], 1, 1, 1)
    return torch.nn.functional.conv2d(x, k, padding=r, groups=x.shape[1])


def _blend(x: Tensor, mask: Tensor, sigma_blur: float) -> Tensor:
    """x with the blurred frame blended in where mask [B or 1, H, W] (values in [0, 1]) is on."""
    m = mask[:, None]
    return x * (1 - m) + gaussian_blur(x, sigma_blur) * m


@torch.no_grad()
def blur_saliency(net, obs: Tensor, sigma_mask: float = 1.0, sigma_blur: float = 1.5,
                  chunk: int = 4096) -> Tensor:
    """Greydanus et al.'s perturbation saliency [B, H, W]: at every cell (i, j), blend a blurred copy
    of the frame in under a Gaussian mask (std `sigma_mask`) centred there, and score
    0.5 * ||logits(frame) - logits(perturbed)||^2. Spatial: all channels are perturbed together."""
    x = check_frame(obs, net.obs_shape[0])
    B, C, H, W = x.shape
    ii, jj = torch.meshgrid(torch.arange(H, dtype=x.dtype), torch.arange(W, dtype=x.dtype), indexing="ij")
    masks = torch.exp(-((ii[None, None] - ii[..., None, None]) ** 2 + (jj[None, None] - jj[..., None, None]) ** 2)
                      / (2 * sigma_mask ** 2)).reshape(H * W, H, W)        # [HW, H, W]
    blurred = gaussian_blur(x, sigma_blur)
    base = net(x)
    out = torch.zeros(B, H * W)
    pairs = [(b, p) for b in range(B) for p in range(H * W)]
    for s in range(0, len(pairs), chunk):
        idx = torch.tensor(pairs[s:s + chunk])
        m = masks[idx[:, 1]][:, None]
        xp = x[idx[:, 0]] * (1 - m) + blurred[idx[:, 0]] * m
        d = 0.5 * ((net(xp) - base[idx[:, 0]]) ** 2).sum(-1)
        out[idx[:, 0], idx[:, 1]] = d
    return out.view(B, H, W)


def spatial(attr: Tensor) -> Tensor:
    """A per-cell map [B, H, W] from a per-channel attribution [B, C, H, W] (|attr| summed over channels);
    a spatial map [B, H, W] is returned as it is."""
    return attr.abs().sum(1) if attr.ndim == 4 else attr.abs()


def per_channel(saliency: Tensor, channels: int = 4) -> Tensor:
    """A spatial map [B, H, W] repeated over the channels [B, C, H, W] (for `object_attribution`)."""
    return saliency[:, None].expand(-1, channels, -1, -1).contiguous()


@torch.no_grad()
def region_effects(net, obs: Tensor, saliency: dict[str, Tensor], k: int = 3, seed: int = 0,
                   sigma_blur: float = 1.5) -> dict[str, Tensor]:
    """The intervention that checks a saliency map: blur (blend the blurred frame in, as
    `blur_saliency` does) the k cells a map ranks highest and measure how far the action
    distribution moves (total variation), beside blurring k cells of equal area chosen at random
    ("random cells") and k cells chosen at random among the occupied ones ("random occupied
    cells": the stricter control on a sparse grid). Returns {name: [B]} for each map in `saliency`
    ({name: [B, H, W] or [B, C, H, W]}) and the two controls."""
    x = check_frame(obs, net.obs_shape[0])
    B, C, H, W = x.shape
    base = net(x)
    g = torch.Generator().manual_seed(seed)

    def effect(scores: Tensor) -> Tensor:
        top = scores.flatten(1).topk(k, dim=1).indices
        mask = torch.zeros(B, H * W).scatter_(1, top, 1.0).view(B, H, W)
        return total_variation(base, net(_blend(x, mask, sigma_blur)))

    out = {name: effect(spatial(s)) for name, s in saliency.items()}
    out["random cells"] = effect(torch.rand(B, H, W, generator=g))
    occupied = (x.abs().sum(1) > 0).float()
    out["random occupied cells"] = effect(occupied + torch.rand(B, H, W, generator=g) * 0.5)
    return out


def policy_entropy(logits: Tensor) -> Tensor:
    """Entropy [B] (nats) of softmax(logits): the predictor an attribution must beat (an uncertain
    policy moves more under any perturbation)."""
    logp = torch.log_softmax(logits.detach().float(), -1)
    return -(logp.exp() * logp).sum(-1)


def attribution_spearman(attr: dict[str, Tensor], effect: dict[str, Tensor]) -> dict[str, float]:
    """{object: Spearman correlation over frames of |attribution| and the intervention's effect}
    (frames where the intervention is undefined are dropped)."""
    out = {}
    for obj, e in effect.items():
        a, e = attr[obj].detach().numpy().astype(float), e.detach().numpy().astype(float)
        keep = np.isfinite(a) & np.isfinite(e)
        if keep.sum() < 8:
            raise CourseError(f"{obj}: fewer than 8 frames with a valid intervention; collect more frames")
        out[obj] = float(spearman_rows(a[keep], e[keep]))
    return out


def variance_matched_direction(acts: Tensor, seed: int) -> Tensor:
    """One random direction [d] drawn from the activations' covariance (rank-1 `variance_matched_random`)."""
    from utils.interp.controls import variance_matched_random
    return variance_matched_random(acts.flatten(1), 1, seed)[:, 0]


def top_pc_direction(acts: Tensor) -> Tensor:
    """The top principal direction [d] of the activations [n, d]."""
    from utils.interp.controls import top_pcs
    return top_pcs(acts.flatten(1), 1)[:, 0]
