"""Checks for chapter 06 (goal misgeneralisation). References live in utils.envs.maze and
utils.goal_misgen.analysis.

Every check draws its inputs from local generators (networks are built inside
`torch.random.fork_rng` and filled from a local generator), uses several mazes and the shapes
the chapter uses, checks that the caller's arrays and tensors are not written into, and compares
with the reference on more than one case.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from utils.core import torch_threads
from utils.envs.maze import MOVES, bfs_distances, encode, maze_layouts
from utils.exercises import ExerciseFailed, check
from utils.goal_misgen import analysis as A
from utils.models.conv_policy import HookedConvPolicy

LAYER = "convs.1.hook_post"


def _quiet(fn):
    """One thread, the global random state restored afterwards, gradients on."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(1), torch.random.fork_rng(devices=[]), torch.enable_grad():
            return fn(*args, **kwargs)
    return wrapper


def _policy(seed: int, channels=(6, 5), hidden: int = 16) -> HookedConvPolicy:
    with torch.random.fork_rng(devices=[]):
        model = HookedConvPolicy((3, 7, 7), 4, channels=channels, hidden=(hidden,))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 4
            p.copy_(torch.randn(p.shape, generator=g) * 1.5 / math.sqrt(fan_in) + (0.05 if p.ndim == 1 else 0.0))
    return model.eval()


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    got_t = got if isinstance(got, Tensor) else None
    if got_t is None:
        raise ExerciseFailed(f"{what}: expected a tensor, got {type(got).__name__}")
    if tuple(got_t.shape) != tuple(want.shape):
        raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got_t.shape)}")
    if not torch.allclose(got_t.detach().double(), want.detach().double(), atol=atol, rtol=1e-4):
        raise ExerciseFailed(f"{what}: values differ from the reference (max error "
                             f"{(got_t.detach().double() - want.double()).abs().max():.4g})")


def _layouts(n: int, seed: int, cheese: str = "anywhere") -> dict:
    return maze_layouts(n, seed=seed, cheese=cheese)


def _same(before, after, what: str) -> None:
    """ExerciseFailed if the learner's function wrote into the caller's array or tensor `what`."""
    eq = torch.equal(before, after) if isinstance(before, Tensor) else np.array_equal(np.asarray(before), np.asarray(after))
    if not eq:
        raise ExerciseFailed(f"you wrote into the caller's {what} in place: work on a copy")


def _policy_untouched(policy, saved: dict) -> None:
    for k, v in policy.state_dict().items():
        _same(saved[k], v, f"policy's {k}")
    if any(len(h._forward_hooks) for h in policy.hook_dict.values()):
        raise ExerciseFailed("a hook is still attached to the policy: use run_with_hooks (it removes its hooks)")


def _saved(policy) -> dict:
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


# ------------------------------------------------------------------ 1. BFS distances
@check
@_quiet
def check_bfs_distances(fn) -> None:
    """bfs_distances(walls, source) -> [side, side] int path lengths, -1 where unreachable."""
    lay = _layouts(6, seed=11)
    extra = np.zeros((5, 5), bool)
    extra[:, 2] = True  # a wall splitting the grid: the right half is unreachable
    cases = [(w, a) for w, a in zip(lay["walls"], lay["agent"])] + [(extra, np.array([0, 0]))]
    cases.append((lay["walls"][0], tuple(int(v) for v in lay["agent"][0])))    # a (row, col) tuple works too
    for walls, src in cases:
        w0, s0 = walls.copy(), np.array(src)
        got = np.asarray(fn(walls, src))
        if not np.array_equal(walls, w0):
            raise ExerciseFailed("you wrote into the caller's walls: work on a copy")
        _same(s0, np.asarray(src), "source")
        want = bfs_distances(walls, src)
        if got.shape != want.shape:
            raise ExerciseFailed(f"expected shape {want.shape}, got {got.shape}")
        if not np.array_equal(got, want) and isinstance(src, np.ndarray) and (got[src] == 0).all() and \
                ((want[src] != 0) | walls[src]).any():
            raise ExerciseFailed(f"whole rows {src.tolist()} got distance 0: dist[source] with a numpy array source "
                                 "indexes ROWS; use dist[source[0], source[1]] (or tuple(source))")
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)[0]
            raise ExerciseFailed(f"distance at square {tuple(int(v) for v in bad)} from {tuple(int(v) for v in src)}: expected {want[tuple(bad)]}, got "
                                 f"{got[tuple(bad)]} (moves are up/down/left/right through open squares; walls and "
                                 "unreachable squares are -1)")


# ------------------------------------------------------------------ 2. first steps of shortest paths
@check
@_quiet
def check_first_steps(fn) -> None:
    """first_steps(walls, source, target) -> [4] bool over (up, down, left, right)."""
    lay = _layouts(12, seed=12)
    open_field = np.zeros((5, 5), bool)
    cases = [(w, a, c) for w, a, c in zip(lay["walls"], lay["agent"], lay["cheese"])]
    cases.append((open_field, np.array([4, 0]), np.array([0, 4])))   # two actions start shortest paths
    w0 = lay["walls"][0]
    here = tuple(np.argwhere(~w0)[len(np.argwhere(~w0)) // 2])
    cases.append((w0, np.array(here), np.array(here)))     # already at the target: no move gets closer
    for walls, src, tgt in cases:
        saved = (walls.copy(), src.copy(), tgt.copy())
        got = np.asarray(fn(walls, src, tgt))
        for x, x0, what in zip((walls, src, tgt), saved, ("walls", "source", "target")):
            _same(x0, x, what)
        want = A.first_steps(walls, src, tgt)
        if (src == tgt).all() and got.shape == (4,) and got.any():
            raise ExerciseFailed("source == target: no move gets closer, yet you return True for "
                                 f"{got.tolist()}; a wall next to the target has distance -1 = 0 - 1: "
                                 "only count squares with distance >= 0")
        if got.shape != (4,) or got.dtype != bool:
            raise ExerciseFailed(f"return a bool array of shape (4,) over (up, down, left, right), got {got.dtype} {got.shape}")
        if not np.array_equal(got, want):
            raise ExerciseFailed(f"from {tuple(src.tolist())} to {tuple(tgt.tolist())}: expected {want.tolist()}, got {got.tolist()} "
                                 "(every action whose next square is one step closer along the maze, not as the crow flies)")


# ------------------------------------------------------------------ 3. decision square
@check
@_quiet
def check_decision_square(fn) -> None:
    """decision_square(walls, start, cheese, corner) -> (row, col) array or None."""
    lay = _layouts(40, seed=13)
    n_found = 0
    for w, a, c, co in zip(lay["walls"], lay["agent"], lay["cheese"], lay["corner"]):
        want = A.decision_square(w, a, c, co)
        args = (w.copy(), a.copy(), c.copy(), co.copy())
        got = fn(*args)
        for x, x0, what in zip(args, (w, a, c, co), ("walls", "start", "cheese", "corner")):
            if not np.array_equal(np.asarray(x), x0):
                raise ExerciseFailed(f"you wrote into the caller's {what} (walking sq += move on an array that IS "
                                     f"the caller's {what}?): start from a copy, sq = np.array(start)")
        if want is None:
            if got is not None:
                raise ExerciseFailed(f"start {tuple(a.tolist())}, cheese {tuple(c.tolist())}, corner {tuple(co.tolist())}: the cheese lies on the "
                                     f"way to the corner, so there is no decision square (None); got {got}")
            continue
        n_found += 1
        if got is None or tuple(np.asarray(got).tolist()) != tuple(want.tolist()):
            raise ExerciseFailed(f"start {tuple(a.tolist())}, cheese {tuple(c.tolist())}, corner {tuple(co.tolist())}: expected the decision square "
                                 f"{tuple(want.tolist())}, got {None if got is None else tuple(np.asarray(got).tolist())} (the last "
                                 "square both shortest paths share)")
    if n_found < 5:  # pragma: no cover - a property of the fixed layouts
        raise AssertionError("the check's layouts have too few decision squares")


# ------------------------------------------------------------------ 4. channel patching
@check
@_quiet
def check_channel_patching(fn) -> None:
    """channel_patching(policy, clean, corrupt, layer, a_clean, a_corrupt) -> [channels]."""
    for seed in (0, 1):
        policy = _policy(seed)
        pairs = A.cheese_pairs(24, seed=20 + seed)
        clean, corrupt = pairs["clean"].clone(), pairs["corrupt"].clone()
        a_c, a_x = torch.as_tensor(pairs["a_clean"]).clone(), torch.as_tensor(pairs["a_corrupt"]).clone()
        a_x[0] = a_c[0]          # a pair whose two actions agree: d_corrupt == d_clean, it must be left out
        saved = _saved(policy)
        for layer in ("convs.0.hook_post", LAYER):
            a_c0, a_x0 = a_c.clone(), a_x.clone()
            got = fn(policy, clean, corrupt, layer, a_c, a_x)
            if not torch.equal(clean, pairs["clean"]) or not torch.equal(corrupt, pairs["corrupt"]):
                raise ExerciseFailed("you wrote into the caller's observations: work on copies")
            _same(a_c0, a_c, "a_clean")
            _same(a_x0, a_x, "a_corrupt")
            _policy_untouched(policy, saved)
            if isinstance(got, Tensor) and not torch.isfinite(got).all():
                raise ExerciseFailed(f"{layer}: NaN/inf channel effects: divide the SUM over pairs of "
                                     "(d_patched - d_clean) by the SUM of (d_corrupt - d_clean), not pair by pair")
            want = A.channel_patching(policy, clean, corrupt, layer, a_c, a_x)
            if isinstance(got, Tensor) and got.shape == want.shape and not torch.allclose(got, want, atol=1e-4):
                if torch.allclose(got, A.channel_patching(policy, corrupt, clean, layer, a_x, a_c), atol=1e-4):
                    raise ExerciseFailed(f"{layer}: you patched the wrong way round: run the CLEAN input with one "
                                         "channel's map taken from the CORRUPT run")
                if torch.allclose(got, 1 - want, atol=1e-4):
                    raise ExerciseFailed(f"{layer}: you return 1 - the effect: report sum(d_patched - d_clean) / "
                                         "sum(d_corrupt - d_clean), the share of the change one channel carries")
                if torch.allclose(got, _patch_mean_of_ratios(policy, clean, corrupt, layer, a_c, a_x), atol=1e-4):
                    raise ExerciseFailed(f"{layer}: you average per-pair ratios, which one pair with a tiny "
                                         "denominator can swing: divide the sums over pairs instead")
            _close(got, want, f"channel effects at {layer} (sum over pairs of (d_patched - d_clean) / "
                   "sum of (d_corrupt - d_clean))", atol=1e-4)


# ------------------------------------------------------------------ 5. cheese-tracking channels
@check
@_quiet
def check_cheese_tracking(fn) -> None:
    """cheese_tracking(policy, walls, agent, cheese, layer) -> [channels]."""
    for seed, layer in ((2, LAYER), (3, "convs.0.hook_post")):
        policy = _policy(seed)
        saved = _saved(policy)
        lay = _layouts(16, seed=30 + seed)
        w0, ag0, c0 = lay["walls"].copy(), lay["agent"].copy(), lay["cheese"].copy()
        got = fn(policy, lay["walls"], lay["agent"], lay["cheese"], layer)
        if not np.array_equal(c0, lay["cheese"]):
            raise ExerciseFailed("you wrote into the caller's cheese squares: work on a copy")
        _same(w0, lay["walls"], "walls")
        _same(ag0, lay["agent"], "agent")
        _policy_untouched(policy, saved)
        want = A.cheese_tracking(policy, lay["walls"], lay["agent"], lay["cheese"], layer)
        if layer != LAYER and isinstance(got, Tensor) and tuple(got.shape) != tuple(want.shape) and tuple(got.shape) == \
                tuple(A.cheese_tracking(policy, lay["walls"], lay["agent"], lay["cheese"], LAYER).shape):
            raise ExerciseFailed(f"asked for {layer}, you read {LAYER}: cache the `layer` argument")
        _close(got, want, f"cheese tracking at {layer}", atol=1e-5)


# ------------------------------------------------------------------ 6. cheese vectors
@check
@_quiet
def check_cheese_vectors(fn) -> None:
    """cheese_vectors(policy, walls, agent, cheese, layer) -> [n, channels, H, W]."""
    for seed, layer in ((4, LAYER), (5, "convs.0.hook_post")):
        policy = _policy(seed)
        lay = _layouts(10, seed=40 + seed)
        saved, w0, ag0, c0 = _saved(policy), lay["walls"].copy(), lay["agent"].copy(), lay["cheese"].copy()
        got = fn(policy, lay["walls"], lay["agent"], lay["cheese"], layer)
        if not np.array_equal(c0, lay["cheese"]):
            raise ExerciseFailed("you wrote into the caller's cheese squares (cheese[:] = -1 to build the maze "
                                 "without cheese?): use a new array, np.full((n, 2), -1)")
        _same(w0, lay["walls"], "walls")
        _same(ag0, lay["agent"], "agent")
        _policy_untouched(policy, saved)
        _close(got, A.cheese_vectors(policy, lay["walls"], lay["agent"], lay["cheese"], layer), f"cheese vectors at {layer}")


# ------------------------------------------------------------------ 7. norm-matched random control
@check
@_quiet
def check_random_like(fn) -> None:
    """random_like(vectors, seed) -> random directions with each row's norm."""
    g = torch.Generator().manual_seed(50)
    v = torch.randn(7, 3, 4, 4, generator=g) * torch.linspace(0.1, 3.0, 7)[:, None, None, None]
    v0 = v.clone()
    before = torch.get_rng_state()
    a = fn(v, 0)
    if not torch.equal(before, torch.get_rng_state()):
        raise ExerciseFailed("random_like drew from (or reseeded, torch.manual_seed) the global generator: the "
                             "notebook's later draws change; use torch.randn(..., generator=torch.Generator()"
                             ".manual_seed(seed))")
    b, c = fn(v, 0), fn(v, 1)
    if not torch.equal(v, v0):
        raise ExerciseFailed("you wrote into the caller's vectors: work on a copy")
    if not isinstance(a, Tensor) or a.shape != v.shape:
        raise ExerciseFailed(f"expected a tensor of shape {tuple(v.shape)}")
    if not torch.equal(a, b) or torch.allclose(a, c):
        raise ExerciseFailed("the same seed must give the same directions and another seed other ones (use a local "
                             "torch.Generator().manual_seed(seed))")
    if not torch.allclose(a.flatten(1).norm(dim=1), v.flatten(1).norm(dim=1), rtol=1e-4):
        raise ExerciseFailed("each maze's random direction must have the norm of THAT maze's vector (row-wise norms)")
    cos = torch.nn.functional.cosine_similarity(a.flatten(1), v.flatten(1), dim=1).abs().max()
    if cos > 0.9:
        raise ExerciseFailed("the random directions are almost parallel to the vectors: draw them independently")
    # The distribution: an isotropic Gaussian direction per row (centred, not uniform in [0, 1); new per row).
    many = torch.ones(400, 2, 4, 4)
    d = fn(many, 3).flatten(1)
    u = d / d.norm(dim=1, keepdim=True)
    rows_cos = (u[1:] * u[:-1]).sum(1).abs()
    if rows_cos.min() > 0.99:
        raise ExerciseFailed("every row got the same direction: draw one random vector per row (randn of the "
                             "full shape), not one shared by the batch")
    if (d < 0).float().mean() < 0.25 or u.mean(0).abs().max() > 0.1:
        raise ExerciseFailed("the random directions are not centred (all in the positive orthant?): draw them "
                             "from a Gaussian, torch.randn, not torch.rand")
    sq = (u ** 2).mean(0) * u.shape[1]     # isotropic: each coordinate carries 1 / dim of the squared norm
    if (sq - 1).abs().max() > 0.35:
        raise ExerciseFailed("the random directions are not isotropic: draw every coordinate from the same "
                             "standard Gaussian and rescale the whole row")


# ------------------------------------------------------------------ 8. retargeting hook
@check
@_quiet
def check_retarget_hook(fn) -> None:
    """retarget_hook(channels, target, value) -> hook(act, hook) setting channels at target[i]."""
    g = torch.Generator().manual_seed(60)
    act = torch.randn(5, 6, 7, 7, generator=g)
    target = np.array([[0, 6], [3, 2], [6, 0], [1, 1], [4, 5]])
    five = ([0, 1, 2, 4, 5], torch.tensor([1.0, -1.0, 2.0, 0.5, 3.0]))   # as many channels as mazes
    for channels, value in (five, ([1, 4], 3.5), ([0], torch.tensor([-2.0])), ([2, 3, 5], torch.tensor([1.0, 2.0, 3.0]))):
        a0 = act.clone()
        t = target.copy()
        got = fn(channels, t, value)(act, None)
        if not torch.equal(act, a0):
            raise ExerciseFailed("the hook wrote into the activation in place: return an edited copy")
        _same(target, t, "target")
        want = A.retarget_hook(channels, target, value)(act, None)
        if len(channels) == len(act) and isinstance(got, Tensor) and got.shape == want.shape:
            diff = (got != act).nonzero()
            if len(diff) == len(channels) * len(act) and not torch.equal(got, want):
                raise ExerciseFailed("you paired channel j with the target of maze j (act[:, ch, r, c]): index "
                                     "rows, channels and targets so that maze i gets EVERY channel at target[i], "
                                     "e.g. act[rows[:, None], ch[None, :], r[:, None], c[:, None]]")
        _close(got, want, f"edited activation (channels {channels})", atol=0)


# ------------------------------------------------------------------ 9. cheese sensitivity
@check
@_quiet
def check_cheese_sensitivity(fn) -> None:
    """cheese_sensitivity(policy, pairs) -> float, the mean total-variation distance."""
    for seed in (6, 7):
        policy = _policy(seed)
        pairs = A.cheese_pairs(20, seed=70 + seed)
        kept = {k: (v.clone() if isinstance(v, Tensor) else np.array(v, copy=True)) for k, v in pairs.items()}
        saved = _saved(policy)
        got = fn(policy, pairs)
        if set(pairs) != set(kept):
            raise ExerciseFailed("you added or removed keys of the caller's pairs dict: read it, do not edit it")
        for k, v in kept.items():
            _same(v, pairs[k], f'pairs["{k}"]')
        _policy_untouched(policy, saved)
        want = A.cheese_sensitivity(policy, pairs)
        if not isinstance(got, (float, np.floating)) and not (isinstance(got, Tensor) and got.numel() == 1):
            raise ExerciseFailed(f"return one float, got {type(got).__name__}")
        if abs(float(got) - want) > 1e-5:
            hint = "half the L1 distance between the two action distributions, averaged over pairs"
            if abs(float(got) - 2 * want) < 1e-5:
                hint = "you return the L1 distance: total variation is HALF of it, 0.5 * |p - q|.sum(-1)"
            raise ExerciseFailed(f"expected {want:.5f}, got {float(got):.5f} ({hint})")


# ------------------------------------------------------------------ 10. Spearman
@check
@_quiet
def check_spearman(fn) -> None:
    """spearman(x, y) -> float, with average ranks for ties."""
    rng = np.random.default_rng(80)
    cases = [(rng.normal(size=9), rng.normal(size=9)), (np.array([1, 2, 2, 3, 5.0]), np.array([2, 1, 4, 4, 9.0])),
             (np.exp(np.arange(6.0)), np.arange(6.0))]
    for x, y in cases:
        x0, y0 = x.copy(), y.copy()
        got = fn(x, y)
        if not np.array_equal(x, x0):
            raise ExerciseFailed("you wrote into the caller's x: work on a copy")
        if not np.array_equal(y, y0):
            raise ExerciseFailed("you wrote into the caller's y: work on a copy")
        want = A.spearman(x, y)
        if abs(float(got) - want) > 1e-9:
            raise ExerciseFailed(f"x={np.round(x, 3).tolist()}, y={np.round(y, 3).tolist()}: expected {want:.4f}, "
                                 f"got {float(got):.4f} (Pearson correlation of the ranks; tied values share their mean rank)")


# ------------------------------------------------------------------ 11. Spearman interval
@check
@_quiet
def check_spearman_interval(fn) -> None:
    """spearman_interval(x, y, alpha=0.05) -> (rho, low, high), Fisher z with se 1.03 / sqrt(n - 3)."""
    rng = np.random.default_rng(81)
    x = rng.normal(size=8)
    cases = [(x, x + rng.normal(size=8), 0.1), (x, x + rng.normal(size=8), 0.01)]
    for n in (6, 9, 15):
        x = rng.normal(size=n)
        cases.append((x, x + rng.normal(size=n), None))
    cases += [(x, x ** 3, None), (x, -x, 0.2)]          # rho = +1 and -1 exactly
    for x, y, alpha in cases:
        x0, y0 = x.copy(), y.copy()
        try:
            got = fn(x, y) if alpha is None else fn(x, y, alpha)
        except (ValueError, ZeroDivisionError, OverflowError) as e:
            if abs(A.spearman(x, y)) == 1:
                raise ExerciseFailed(f"rho = {A.spearman(x, y):+.0f} exactly (a perfect ranking) raised {type(e).__name__}: "
                                     f"{e}; atanh(+-1) is infinite: clip rho to +-0.999999 before atanh") from None
            raise
        _same(x0, x, "x")
        _same(y0, y, "y")
        want = A.spearman_interval(x, y) if alpha is None else A.spearman_interval(x, y, alpha)
        n, a = len(x), 0.05 if alpha is None else alpha
        if len(got) != 3 or not np.allclose(np.asarray(got, float), want, atol=1e-6):
            g = np.asarray(got, float)
            hint = ""
            if a != 0.05 and len(g) == 3 and np.allclose(g, A.spearman_interval(x, y), atol=1e-4):
                hint = f" (alpha={a} gave the 95% interval: use the normal quantile 1 - alpha / 2, not 1.96)"
            raise ExerciseFailed(f"n={n}, alpha={a}: expected {np.round(want, 4).tolist()}, got "
                                 f"{np.round(g, 4).tolist()}{hint}")


CHECKS = {
    "bfs_distances": check_bfs_distances,
    "first_steps": check_first_steps,
    "decision_square": check_decision_square,
    "channel_patching": check_channel_patching,
    "cheese_tracking": check_cheese_tracking,
    "cheese_vectors": check_cheese_vectors,
    "random_like": check_random_like,
    "retarget_hook": check_retarget_hook,
    "cheese_sensitivity": check_cheese_sensitivity,
    "spearman": check_spearman,
    "spearman_interval": check_spearman_interval,
}


# --- plausible mistakes (the tests prove each check rejects them) ------------------------
def _bfs_manhattan(walls, source):
    rr, cc = np.indices(walls.shape)
    d = np.abs(rr - source[0]) + np.abs(cc - source[1])
    return np.where(walls, -1, d)


def _bfs_unreachable_zero(walls, source):
    d = bfs_distances(walls, source)
    return np.where(d < 0, 0, d)


def _bfs_diagonal(walls, source):
    dist = np.full(walls.shape, -1)
    dist[tuple(source)] = 0
    frontier = [tuple(source)]
    while frontier:
        nxt = []
        for r, c in frontier:
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < walls.shape[0] and 0 <= cc < walls.shape[1] and not walls[rr, cc] and dist[rr, cc] < 0:
                        dist[rr, cc] = dist[r, c] + 1
                        nxt.append((rr, cc))
        frontier = nxt
    return dist


def _bfs_indexes_with_source_array(walls, source):
    dist = np.full(walls.shape, -1, np.int64)
    dist[source] = 0                           # an array index picks whole ROWS, not the square
    r0, c0 = int(source[0]), int(source[1])
    dist[r0, c0] = 0
    frontier = [(r0, c0)]
    while frontier:
        nxt = []
        for r, c in frontier:
            for dr, dc in MOVES:
                rr, cc = r + int(dr), c + int(dc)
                if 0 <= rr < walls.shape[0] and 0 <= cc < walls.shape[1] and not walls[rr, cc] and dist[rr, cc] < 0:
                    dist[rr, cc] = dist[r, c] + 1
                    nxt.append((rr, cc))
        frontier = nxt
    return dist


def _first_manhattan(walls, source, target):
    d = np.asarray(target) - np.asarray(source)
    return np.array([d[0] < 0, d[0] > 0, d[1] < 0, d[1] > 0])


def _first_only_one(walls, source, target):
    out = A.first_steps(walls, source, target)
    keep = np.zeros(4, bool)
    keep[np.flatnonzero(out)[:1]] = True
    return keep


def _first_from_source_distances(walls, source, target):
    dist = bfs_distances(walls, source)  # distances from the wrong end
    r, c = source
    out = np.zeros(4, bool)
    for a, (dr, dc) in enumerate(MOVES):
        rr, cc = r + dr, c + dc
        if 0 <= rr < walls.shape[0] and 0 <= cc < walls.shape[1] and dist[rr, cc] >= 0:
            out[a] = dist[rr, cc] == 1 and dist[tuple(target)] > 0
    return out


def _ds_start(walls, start, cheese, corner):
    return None if A.decision_square(walls, start, cheese, corner) is None else np.asarray(start)


def _ds_one_too_far(walls, start, cheese, corner):
    sq = A.decision_square(walls, start, cheese, corner)
    if sq is None:
        return None
    return sq + MOVES[np.flatnonzero(A.first_steps(walls, sq, cheese))[0]]


def _ds_never_none(walls, start, cheese, corner):
    sq = A.decision_square(walls, start, cheese, corner)
    return np.asarray(start) if sq is None else sq


@torch.no_grad()
def _patch_raw(policy, clean, corrupt, layer, a_clean, a_corrupt):
    rows = torch.arange(len(clean))
    src = policy.run_with_cache(corrupt, names_filter=[layer])[1][layer]
    base = policy(clean)
    out = torch.zeros(src.shape[1])
    for ch in range(src.shape[1]):
        def hook(act, hook, ch=ch):
            act = act.clone()
            act[:, ch] = src[:, ch]
            return act
        d = policy.run_with_hooks(clean, fwd_hooks=[(layer, hook)])
        out[ch] = ((d - base)[rows, a_corrupt] - (d - base)[rows, a_clean]).mean()
    return out


@torch.no_grad()
def _patch_reversed(policy, clean, corrupt, layer, a_clean, a_corrupt):
    return A.channel_patching(policy, corrupt, clean, layer, a_corrupt, a_clean)


@torch.no_grad()
def _patch_all_but_one(policy, clean, corrupt, layer, a_clean, a_corrupt):
    eff = A.channel_patching(policy, clean, corrupt, layer, a_clean, a_corrupt)
    return 1.0 - eff


@torch.no_grad()
def _track_no_baseline(policy, walls, agent, cheese, layer):
    a = policy.run_with_cache(torch.from_numpy(encode(walls, agent, cheese)), names_filter=[layer])[1][layer]
    return a[torch.arange(len(walls)), :, torch.as_tensor(cheese[:, 0]), torch.as_tensor(cheese[:, 1])].mean(0)


@torch.no_grad()
def _track_whole_map(policy, walls, agent, cheese, layer):
    v = A.cheese_vectors(policy, walls, agent, cheese, layer)
    return v.mean((0, 2, 3))


@torch.no_grad()
def _track_abs(policy, walls, agent, cheese, layer):
    return A.cheese_tracking(policy, walls, agent, cheese, layer).abs()


@torch.no_grad()
def _vec_reversed(policy, walls, agent, cheese, layer):
    return -A.cheese_vectors(policy, walls, agent, cheese, layer)


@torch.no_grad()
def _vec_mean(policy, walls, agent, cheese, layer):
    v = A.cheese_vectors(policy, walls, agent, cheese, layer)
    return v.mean(0, keepdim=True).expand_as(v).clone()


@torch.no_grad()
def _vec_moved_cheese(policy, walls, agent, cheese, layer):
    moved = agent.copy()  # "without cheese" built by moving it onto the agent
    a = policy.run_with_cache(torch.from_numpy(encode(walls, agent, cheese)), names_filter=[layer])[1][layer]
    b = policy.run_with_cache(torch.from_numpy(encode(walls, agent, moved)), names_filter=[layer])[1][layer]
    return a - b


def _rand_global_norm(vectors, seed):
    r = torch.randn(vectors.shape, generator=torch.Generator().manual_seed(seed))
    return r / r.norm() * vectors.norm()


def _rand_unit(vectors, seed):
    r = torch.randn(vectors.shape, generator=torch.Generator().manual_seed(seed)).flatten(1)
    return (r / r.norm(dim=1, keepdim=True)).reshape(vectors.shape)


def _rand_global_rng(vectors, seed):
    r = torch.randn(vectors.shape).flatten(1)
    return (r / r.norm(dim=1, keepdim=True) * vectors.flatten(1).norm(dim=1, keepdim=True)).reshape(vectors.shape)


def _retarget_in_place(channels, target, value):
    ref = A.retarget_hook(channels, target, value)

    def hook(act, hook):
        act.copy_(ref(act, hook))
        return act
    return hook


def _retarget_swapped(channels, target, value):
    return A.retarget_hook(channels, target[:, ::-1].copy(), value)


def _retarget_whole_map(channels, target, value):
    def hook(act, hook):
        act = act.clone()
        val = torch.as_tensor(value, dtype=act.dtype).reshape(-1, 1, 1) if torch.as_tensor(value).ndim else value
        act[:, list(channels)] = val
        return act
    return hook


@torch.no_grad()
def _sens_l1(policy, pairs):
    return 2 * A.cheese_sensitivity(policy, pairs)


@torch.no_grad()
def _sens_argmax(policy, pairs):
    return float((policy(pairs["clean"]).argmax(-1) != policy(pairs["corrupt"]).argmax(-1)).float().mean())


@torch.no_grad()
def _sens_logits(policy, pairs):
    return float(0.5 * (policy(pairs["clean"]) - policy(pairs["corrupt"])).abs().sum(-1).mean())


def _spearman_pearson(x, y):
    return float(np.corrcoef(x, y)[0, 1])


def _spearman_ordinal_ties(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _spearman_in_place(x, y):
    out = A.spearman(x, y)
    x.sort()
    return out


def _si_sqrt_n(x, y, alpha=0.05):
    rho = A.spearman(x, y)
    z, half = math.atanh(rho), 1.96 * 1.03 / math.sqrt(len(x))
    return rho, math.tanh(z - half), math.tanh(z + half)


def _si_symmetric(x, y, alpha=0.05):
    rho = A.spearman(x, y)
    half = 1.96 * 1.03 / math.sqrt(len(x) - 3)
    return rho, rho - half, rho + half


def _si_pearson(x, y, alpha=0.05):
    r = float(np.corrcoef(x, y)[0, 1])
    z, half = math.atanh(r), 1.96 * 1.03 / math.sqrt(len(x) - 3)
    return r, math.tanh(z - half), math.tanh(z + half)


def _first_no_distance_guard(walls, source, target):
    dist = bfs_distances(walls, target)
    r, c = int(source[0]), int(source[1])
    out = np.zeros(4, bool)
    for a, (dr, dc) in enumerate(MOVES):
        rr, cc = r + dr, c + dc
        if 0 <= rr < walls.shape[0] and 0 <= cc < walls.shape[1]:
            out[a] = dist[rr, cc] == dist[r, c] - 1     # a wall (-1) counts as "closer" to a source at 0
    return out


def _ds_walks_start_in_place(walls, start, cheese, corner):
    sq = np.asarray(start)                             # the caller's array, not a copy
    if (np.asarray(cheese) == np.asarray(corner)).all():
        return None
    while True:
        to_ch, to_co = A.first_steps(walls, sq, cheese), A.first_steps(walls, sq, corner)
        if not to_ch.any() or not to_co.any():
            return None
        both = to_ch & to_co
        if not both.any():
            return sq.copy()
        sq += MOVES[np.flatnonzero(both)[0]]
        if (sq == np.asarray(cheese)).all():
            return None


@torch.no_grad()
def _patch_mean_of_ratios(policy, clean, corrupt, layer, a_clean, a_corrupt):
    """The old, unstable estimator: the mean over pairs of per-pair ratios (tied pairs left out)."""
    rows = torch.arange(len(clean))
    src = policy.run_with_cache(corrupt, names_filter=[layer])[1][layer]
    lc, lx = policy(clean), policy(corrupt)
    d_clean, d_corrupt = lc[rows, a_corrupt] - lc[rows, a_clean], lx[rows, a_corrupt] - lx[rows, a_clean]
    keep = (d_corrupt - d_clean).abs() > 1e-6
    out = torch.zeros(src.shape[1])
    for ch in range(src.shape[1]):
        def hook(act, hook, ch=ch):
            act = act.clone()
            act[:, ch] = src[:, ch]
            return act
        lp = policy.run_with_hooks(clean, fwd_hooks=[(layer, hook)])
        out[ch] = ((lp[rows, a_corrupt] - lp[rows, a_clean] - d_clean)[keep] / (d_corrupt - d_clean)[keep]).mean()
    return out


@torch.no_grad()
def _track_fixed_layer(policy, walls, agent, cheese, layer):
    return A.cheese_tracking(policy, walls, agent, cheese, "convs.1.hook_post")


@torch.no_grad()
def _track_removes_cheese_in_place(policy, walls, agent, cheese, layer):
    want = A.cheese_tracking(policy, walls, agent, cheese.copy(), layer)
    cheese[:] = -1
    return want


@torch.no_grad()
def _vec_removes_cheese_in_place(policy, walls, agent, cheese, layer):
    a = policy.run_with_cache(torch.from_numpy(encode(walls, agent, cheese)), names_filter=[layer])[1][layer]
    cheese[:] = -1                                     # "no cheese", written into the caller's array
    b = policy.run_with_cache(torch.from_numpy(encode(walls, agent, cheese)), names_filter=[layer])[1][layer]
    return a - b


def _rand_positive_orthant(vectors, seed):
    r = torch.rand(vectors.shape, generator=torch.Generator().manual_seed(seed)).flatten(1)
    return (r / r.norm(dim=1, keepdim=True) * vectors.flatten(1).norm(dim=1, keepdim=True)).reshape(vectors.shape)


def _rand_reseeds_global(vectors, seed):
    torch.manual_seed(seed)
    r = torch.randn(vectors.shape).flatten(1)
    return (r / r.norm(dim=1, keepdim=True) * vectors.flatten(1).norm(dim=1, keepdim=True)).reshape(vectors.shape)


def _rand_one_direction(vectors, seed):
    r = torch.randn(vectors[0].numel(), generator=torch.Generator().manual_seed(seed))
    return (r[None] / r.norm() * vectors.flatten(1).norm(dim=1, keepdim=True)).reshape(vectors.shape)


def _retarget_pairs_channels_with_mazes(channels, target, value):
    ch = torch.as_tensor(list(channels))
    r, c = torch.as_tensor(target[:, 0]), torch.as_tensor(target[:, 1])

    def hook(act, hook):
        act = act.clone()
        act[:, ch, r, c] = torch.as_tensor(value, dtype=act.dtype)
        return act
    return hook


@torch.no_grad()
def _sens_edits_pairs(policy, pairs):
    pairs["clean"] = pairs["clean"].float()
    pairs["corrupt"] = pairs["corrupt"].flip(0).flip(0) + 0.0
    pairs.pop("a_clean", None)                         # "not needed here"
    return A.cheese_sensitivity(policy, pairs)


def _spearman_sorts_y(x, y):
    out = A.spearman(x, y)
    y.sort()
    return out


def _si_hard_coded_196(x, y, alpha=0.05):
    rho = A.spearman(x, y)
    z, half = math.atanh(max(min(rho, 0.999999), -0.999999)), 1.96 * 1.03 / math.sqrt(len(x) - 3)
    return rho, math.tanh(z - half), math.tanh(z + half)


def _si_no_clip(x, y, alpha=0.05):
    from statistics import NormalDist
    rho = A.spearman(x, y)
    z, half = math.atanh(rho), NormalDist().inv_cdf(1 - alpha / 2) * 1.03 / math.sqrt(len(x) - 3)
    return rho, math.tanh(z - half), math.tanh(z + half)


WRONG_ANSWERS = {
    "bfs_distances": [_bfs_manhattan, _bfs_unreachable_zero, _bfs_diagonal, _bfs_indexes_with_source_array],
    "first_steps": [_first_manhattan, _first_only_one, _first_from_source_distances,
                    _first_no_distance_guard],
    "decision_square": [_ds_start, _ds_one_too_far, _ds_never_none, _ds_walks_start_in_place],
    "channel_patching": [_patch_raw, _patch_reversed, _patch_all_but_one, _patch_mean_of_ratios],
    "cheese_tracking": [_track_no_baseline, _track_whole_map, _track_abs, _track_fixed_layer,
                        _track_removes_cheese_in_place],
    "cheese_vectors": [_vec_reversed, _vec_mean, _vec_moved_cheese, _vec_removes_cheese_in_place],
    "random_like": [_rand_global_norm, _rand_unit, _rand_global_rng, _rand_positive_orthant,
                    _rand_reseeds_global, _rand_one_direction],
    "retarget_hook": [_retarget_in_place, _retarget_swapped, _retarget_whole_map,
                      _retarget_pairs_channels_with_mazes],
    "cheese_sensitivity": [_sens_l1, _sens_argmax, _sens_logits, _sens_edits_pairs],
    "spearman": [_spearman_pearson, _spearman_ordinal_ties, _spearman_in_place, _spearman_sorts_y],
    "spearman_interval": [_si_sqrt_n, _si_symmetric, _si_pearson, _si_hard_coded_196, _si_no_clip],
}
