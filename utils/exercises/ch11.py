"""Checks for chapter 11 (agents that see). References live in utils.vision_agents (games, interp).

Every check draws its inputs from a local `torch.Generator` / numpy generator, uses batches of
several rows, checks that the caller's inputs are not written into, and compares with the
reference on more than one case."""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from utils.core import torch_threads
from utils.envs.minatar import VecBreakout
from utils.exercises import ExerciseFailed, check
from utils.models.conv_policy import HookedConvPolicy
from utils.vision_agents import games as G
from utils.vision_agents import interp as I


def _quiet(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(1), torch.random.fork_rng(devices=[]), torch.enable_grad():
            return fn(*args, **kwargs)
    return wrapper


def _net(seed: int) -> HookedConvPolicy:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HookedConvPolicy((4, 10, 10), 3, channels=(4, 4), hidden=(8,)).eval()


def _states(seed: int, n: int = 12) -> dict:
    env = VecBreakout(n, seed=seed, sticky_action_prob=0.0)
    env.reset()
    g = torch.Generator().manual_seed(seed)
    for _ in range(3 + seed % 5):
        env.step(torch.randint(0, 3, (n,), generator=g))
    return env.get_state()


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    got, want = torch.as_tensor(np.asarray(got) if not isinstance(got, Tensor) else got), torch.as_tensor(want)
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got.double(), want.double(), atol=atol, rtol=1e-4):
        raise ExerciseFailed(f"{what}: values differ from the reference (max error {(got.double() - want.double()).abs().max():.4g})")


def _same_state(before: dict, after: dict) -> None:
    for k in before:
        if not np.array_equal(before[k], after[k]):
            raise ExerciseFailed(f"you wrote into the caller's state[{k!r}]: work on copies")


@check
@_quiet
def check_landing_column(fn) -> None:
    """landing_column(ball_x, ball_y, ball_dir) -> [n] column where a falling ball reaches row 9, -1 if rising."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y, d = rng.integers(0, 10, 40), rng.integers(3, 9, 40), rng.integers(0, 4, 40)
        _close(fn(x.copy(), y.copy(), d.copy()), G.landing_column(x, y, d), "landing column")


@check
@_quiet
def check_move_ball(fn) -> None:
    """move_ball(state, dx) -> (moved state, ok mask): ball and trail shifted, only where both stay on the grid."""
    for seed, dx in ((0, 2), (1, -3), (2, 1), (3, 7), (4, -7)):
        st = _states(seed)
        before = {k: v.copy() for k, v in st.items()}
        got, ok = fn(st, dx)
        _same_state(before, st)
        want, wok = G.move_ball(before, dx)
        _close(np.asarray(ok), wok, f"ok mask (dx={dx})")
        for k in ("ball_x", "last_x", "ball_y", "last_y", "pos", "ball_dir"):
            _close(np.asarray(got[k]), want[k], f"{k} after moving the ball by {dx}")


@check
@_quiet
def check_centred_logit(fn) -> None:
    """centred_logit(logits [B, A], action [B]) -> [B] logit of the action minus the mean logit."""
    g = torch.Generator().manual_seed(0)
    for a_n in (3, 5):
        logits = torch.randn(16, a_n, generator=g)
        act = torch.randint(0, a_n, (16,), generator=g)
        _close(fn(logits.clone(), act.clone()), I.centred_logit(logits, act), "centred logit")


@check
@_quiet
def check_gradient_x_input(fn) -> None:
    """gradient_x_input(net, obs [B, 400], action [B]) -> [B, 4, 10, 10]."""
    for seed in (0, 1):
        net, st = _net(seed), _states(seed)
        obs = G.frames(st)
        act = net(obs).argmax(-1)
        _close(fn(net, obs.clone(), act), I.gradient_x_input(net, obs, act), "gradient x input", atol=1e-5)


@check
@_quiet
def check_integrated_gradients(fn) -> None:
    """integrated_gradients(net, obs, action, steps) -> [B, 4, 10, 10], midpoint rule from the empty grid."""
    for seed, steps in ((0, 8), (1, 16)):
        net, st = _net(seed), _states(seed)
        obs = G.frames(st)
        act = net(obs).argmax(-1)
        _close(fn(net, obs.clone(), act, steps=steps), I.integrated_gradients(net, obs, act, steps=steps),
               f"integrated gradients (steps={steps})", atol=1e-4)


@check
@_quiet
def check_total_variation(fn) -> None:
    """total_variation(logits_a, logits_b) -> [B] half the L1 distance between the two softmax distributions."""
    g = torch.Generator().manual_seed(0)
    for n_a in (3, 4):
        a, b = torch.randn(20, n_a, generator=g) * 2, torch.randn(20, n_a, generator=g) * 2
        _close(fn(a.clone(), b.clone()), I.total_variation(a, b), "total variation")


@check
@_quiet
def check_spearman_rows(fn) -> None:
    """spearman_rows(a, b) -> Spearman correlation along the last axis (works on [n] and [k, n])."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    b[0] = a[0] ** 3
    _close(fn(a.copy(), b.copy()), I.spearman_rows(a, b), "spearman over rows", atol=1e-6)
    _close(np.asarray(fn(a[1].copy(), np.exp(a[1]))), np.asarray(1.0), "spearman of a monotone transform", atol=1e-6)


@check
@_quiet
def check_class_mean_subspace(fn) -> None:
    """class_mean_subspace(acts [n, d], labels [n]) -> orthonormal basis [d, k-1] of the centred class means."""
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 4):
        acts = torch.randn(80, 10, generator=g) + torch.randn(k, 10, generator=g).repeat(80 // k + 1, 1)[:80] * 2
        labels = np.tile(np.arange(k), 80 // k + 1)[:80]
        q = torch.as_tensor(fn(acts.clone(), labels.copy())).double()
        want = I.class_mean_subspace(acts, labels).double()
        if q.shape != want.shape:
            raise ExerciseFailed(f"{k} classes: expected a basis of shape {tuple(want.shape)}, got {tuple(q.shape)}")
        if not torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-4):
            raise ExerciseFailed("the basis is not orthonormal: orthonormalise the centred means (torch.linalg.qr)")
        _close(q @ q.T, want @ want.T, f"projection onto the span ({k} classes)", atol=1e-4)


@check
@_quiet
def check_subspace_patch_hook(fn) -> None:
    """subspace_patch_hook(source, basis) -> hook(act, hook) replacing act's component in span(basis) by source's."""
    g = torch.Generator().manual_seed(0)
    for shape in ((6, 8), (6, 2, 3, 3)):
        d = int(np.prod(shape[1:]))
        act, src = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        q = I.random_subspace(d, 3, seed=1)
        a2 = act.clone()
        got = fn(src, q)(a2, None)
        if not torch.equal(a2, act):
            raise ExerciseFailed("your hook wrote into the activation in place: return a new tensor")
        _close(got, I.subspace_patch_hook(src, q)(act, None), f"patched activation of shape {shape}")


@check
@_quiet
def check_object_attribution(fn) -> None:
    """object_attribution(attr [n, 4, 10, 10], state) -> {ball, paddle, bricks: [n]} summed |attribution| per object."""
    g = torch.Generator().manual_seed(0)
    for seed in (0, 3):
        st = _states(seed)
        attr = torch.randn(12, 4, 10, 10, generator=g)
        got = fn(attr.clone(), st)
        want = I.object_attribution(attr, st)
        if set(got) != set(want):
            raise ExerciseFailed(f"return a dict with keys {sorted(want)}, got {sorted(got)}")
        for k in want:
            _close(got[k], want[k], f"attribution of the {k}")


CHECKS = {"landing_column": check_landing_column, "move_ball": check_move_ball, "centred_logit": check_centred_logit,
          "gradient_x_input": check_gradient_x_input, "integrated_gradients": check_integrated_gradients,
          "total_variation": check_total_variation, "spearman_rows": check_spearman_rows,
          "class_mean_subspace": check_class_mean_subspace, "subspace_patch_hook": check_subspace_patch_hook,
          "object_attribution": check_object_attribution}


# ------------------------------------------------------------------ plausible wrong answers
def _land_no_bounce(x, y, d):
    return np.where(np.isin(d, (2, 3)), np.clip(x + G.DX[d] * (9 - y), 0, 9), -1)


def _land_rising_too(x, y, d):
    return G.landing_column(x, y, np.where(d == 0, 3, np.where(d == 1, 2, d)))


def _move_ball_only(state, dx):
    out = {k: np.array(v, copy=True) for k, v in state.items()}
    ok = (out["ball_x"] + dx >= 0) & (out["ball_x"] + dx <= 9)
    out["ball_x"] = np.where(ok, out["ball_x"] + dx, out["ball_x"])
    return out, ok


def _move_ball_clip(state, dx):
    out = {k: np.array(v, copy=True) for k, v in state.items()}
    out["ball_x"], out["last_x"] = np.clip(out["ball_x"] + dx, 0, 9), np.clip(out["last_x"] + dx, 0, 9)
    return out, np.ones(len(out["ball_x"]), bool)


def _move_ball_in_place(state, dx):
    out, ok = G.move_ball(state, dx)
    state["ball_x"][...] = out["ball_x"]
    return out, ok


def _centred_raw(logits, action):
    return logits.gather(1, action.view(-1, 1)).squeeze(1)


def _centred_logprob(logits, action):
    return torch.log_softmax(logits, -1).gather(1, action.view(-1, 1)).squeeze(1)


def _gxi_grad_only(net, obs, action):
    x = obs.view(-1, 4, 10, 10).clone().requires_grad_(True)
    I.centred_logit(net(x), action).sum().backward()
    return x.grad


def _gxi_raw_logit(net, obs, action):
    x = obs.view(-1, 4, 10, 10).clone().requires_grad_(True)
    net(x).gather(1, action.view(-1, 1)).sum().backward()
    return x.grad * x


def _ig_no_input_scale(net, obs, action, steps=32):
    return I.integrated_gradients(net, obs, action, steps=steps) / obs.view(-1, 4, 10, 10).clamp_min(1e-9) * (obs.view(-1, 4, 10, 10) > 0) * 0 + \
        I.gradient_x_input(net, obs * 0.5, action)


def _ig_left_endpoint(net, obs, action, steps=32):
    x = obs.view(-1, 4, 10, 10)
    total = torch.zeros_like(x)
    for k in range(steps):
        xi = (k / steps * x).requires_grad_(True)
        I.centred_logit(net(xi), action).sum().backward()
        total += xi.grad
    return x * total / steps


def _tv_no_half(a, b):
    return (torch.softmax(a, -1) - torch.softmax(b, -1)).abs().sum(-1)


def _tv_logits(a, b):
    return 0.5 * (a - b).abs().sum(-1)


def _spearman_pearson(a, b):
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    return (a * b).sum(-1) / np.sqrt((a ** 2).sum(-1) * (b ** 2).sum(-1))


def _spearman_argsort_once(a, b):
    ra, rb = np.argsort(a, -1).astype(float), np.argsort(b, -1).astype(float)
    return _spearman_pearson(ra, rb)


def _cms_uncentred(acts, labels):
    labels = torch.as_tensor(labels)
    means = torch.stack([acts[labels == c].mean(0) for c in torch.unique(labels)]).double()
    return torch.linalg.qr(means.T)[0][:, : len(torch.unique(labels)) - 1].float()


def _cms_not_orthonormal(acts, labels):
    labels = torch.as_tensor(labels)
    mu = acts.mean(0)
    diffs = torch.stack([acts[labels == c].mean(0) - mu for c in torch.unique(labels)])
    return diffs[: len(torch.unique(labels)) - 1].T


def _sph_full_replace(source, basis):
    return lambda act, hook: source.clone()


def _sph_add_source(source, basis):
    def hook(act, hook):
        a = act.flatten(1)
        return (a + source.flatten(1) @ basis @ basis.T).view_as(act)
    return hook


def _sph_in_place(source, basis):
    def hook(act, hook):
        new = I.subspace_patch_hook(source, basis)(act, hook)
        act.copy_(new)
        return act
    return hook


def _obj_signed(attr, state):
    masks = I.object_masks(state)
    return {k: (attr * m).flatten(1).sum(1) for k, m in masks.items()}


def _obj_ball_without_trail(attr, state):
    out = I.object_attribution(attr, state)
    m = I.object_masks(state)["ball"].clone()
    m[:, 2] = False
    out["ball"] = (attr.abs() * m).flatten(1).sum(1)
    return out


WRONG_ANSWERS = {
    "landing_column": [_land_no_bounce, _land_rising_too],
    "move_ball": [_move_ball_only, _move_ball_clip, _move_ball_in_place],
    "centred_logit": [_centred_raw, _centred_logprob],
    "gradient_x_input": [_gxi_grad_only, _gxi_raw_logit],
    "integrated_gradients": [_ig_no_input_scale, _ig_left_endpoint],
    "total_variation": [_tv_no_half, _tv_logits],
    "spearman_rows": [_spearman_pearson, _spearman_argsort_once],
    "class_mean_subspace": [_cms_uncentred, _cms_not_orthonormal],
    "subspace_patch_hook": [_sph_full_replace, _sph_add_source, _sph_in_place],
    "object_attribution": [_obj_signed, _obj_ball_without_trail],
}
