"""Opening the maze agent: decision squares, cheese probes, channel patching, the cheese vector,
channel edits that retarget the agent, and the 8.7 prediction from internals.

Conventions: the agents are `utils.models.conv_policy.HookedConvPolicy` networks; a conv
activation is [batch, channels, H, W] at hook `layer` ("convs.{i}.hook_post", `conv_layers(policy)`);
the convolutions keep the grid's resolution, so position (r, c) of a channel map sits over square
(r, c) of the maze.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.maze import AGENT, CHEESE, MOVES, MazeEnv, bfs_distances, encode, maze_layouts
from utils.goal_misgen.behaviour import run_maze
from utils.stats import t_quantile

def conv_layers(policy) -> list[str]:
    """The conv layers' post-activation hooks of a HookedConvPolicy, input to output."""
    return [k for k in policy.hook_dict if k.startswith("convs.") and k.endswith(".hook_post")]


def check_layer(policy, layer: str) -> None:
    if layer not in conv_layers(policy):
        raise CourseError(f"unknown layer {layer!r}: use one of {', '.join(conv_layers(policy))}")


def first_steps(walls: np.ndarray, source, target) -> np.ndarray:
    """[4] bool: which actions start a shortest path from `source` to `target` in the maze."""
    dist = bfs_distances(walls, target)
    r, c = int(source[0]), int(source[1])
    out = np.zeros(4, bool)
    for a, (dr, dc) in enumerate(MOVES):
        rr, cc = r + dr, c + dc
        if 0 <= rr < walls.shape[0] and 0 <= cc < walls.shape[1] and dist[rr, cc] >= 0:
            out[a] = dist[rr, cc] == dist[r, c] - 1
    return out


# ------------------------------------------------------------------ decision squares
def decision_square(walls: np.ndarray, start, cheese, corner) -> np.ndarray | None:
    """The square where the shortest path from `start` to `cheese` and the one to `corner` part: walk
    the cheese path from the start while a step also shortens the way to the corner; the square
    reached is the decision square, (row, col). None when the cheese lies on the way to the corner
    (no such square before the cheese) or either target is unreachable. In a perfect maze shortest
    paths are unique, so the answer is unique."""
    sq = np.asarray(start, np.int64).copy()
    cheese, corner = np.asarray(cheese), np.asarray(corner)
    if (cheese == corner).all():
        return None
    while True:
        to_ch, to_co = first_steps(walls, sq, cheese), first_steps(walls, sq, corner)
        if not to_ch.any() or not to_co.any():
            return None
        both = to_ch & to_co
        if not both.any():
            return sq
        sq = sq + MOVES[np.flatnonzero(both)[0]]
        if (sq == cheese).all():
            return None


def decision_square_data(policy, n: int, seed: int = 0, **env_kwargs) -> dict[str, np.ndarray]:
    """Turner et al.'s decision squares: for `n` mazes with the cheese outside the top-right region,
    the square on the path from the agent's start to the cheese where the path to the maze's
    top-right corner turns away (the last square shared by both shortest paths). At that square:
    the agent's probability of the cheese-ward and the corner-ward action, and the features of
    the regression (distances measured from the decision square; `euclid_cheese_corner` between
    cheese and corner). Mazes where the square does not exist (cheese on the way to the corner)
    are dropped."""
    env = MazeEnv(n * 3, cheese="anywhere", seed=seed, auto_reset=False, **env_kwargs)
    rows = []
    for i in range(env.n_envs):
        w, a, ch, co = env.walls[i], env.agent[i], env.cheese[i], env.corner()[i]
        if env.in_region(ch[None], env.grid[i:i + 1])[0]:
            continue
        d_ch, d_co = bfs_distances(w, ch), bfs_distances(w, co)
        sq = decision_square(w, a, ch, co)
        if sq is None:
            continue
        to_ch, to_co = first_steps(w, sq, ch), first_steps(w, sq, co)
        rows.append(dict(walls=w, agent=sq, cheese=ch, corner=co, a_cheese=np.flatnonzero(to_ch)[0],
                         a_corner=np.flatnonzero(to_co)[0], path_cheese=d_ch[sq[0], sq[1]],
                         path_corner=d_co[sq[0], sq[1]],
                         euclid_cheese=float(np.hypot(*(sq - ch))), euclid_cheese_corner=float(np.hypot(*(ch - co)))))
        if len(rows) == n:
            break
    if len(rows) < 10:
        raise CourseError(f"only {len(rows)} decision squares in {env.n_envs} mazes: use more mazes")
    obs = torch.from_numpy(encode(np.stack([r["walls"] for r in rows]), np.stack([r["agent"] for r in rows]),
                                  np.stack([r["cheese"] for r in rows])))
    with torch.no_grad():
        p = torch.softmax(policy(obs), -1).numpy()
    idx = np.arange(len(rows))
    a_ch = np.array([r["a_cheese"] for r in rows])
    a_co = np.array([r["a_corner"] for r in rows])
    out = {k: np.array([r[k] for r in rows], float) for k in ("path_cheese", "path_corner", "euclid_cheese",
                                                               "euclid_cheese_corner")}
    out.update(p_cheese=p[idx, a_ch], p_corner=p[idx, a_co], obs=obs.numpy(), a_cheese_action=a_ch,
               a_corner_action=a_co,
               walls=np.stack([r["walls"] for r in rows]), agent=np.stack([r["agent"] for r in rows]),
               cheese=np.stack([r["cheese"] for r in rows]))
    out["chooses_cheese"] = out["p_cheese"] > out["p_corner"]
    return out


def standardised_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 200) -> tuple[np.ndarray, float]:
    """Coefficients [d] (on standardised features) and intercept of an L2 logistic regression of y on X
    (Newton's method; deterministic)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    if X.ndim != 2 or len(X) != len(y) or len(X) < 3:
        raise CourseError(f"need features [n, d] and labels [n] with n >= 3, got {X.shape}, {y.shape}")
    Z = (X - X.mean(0)) / X.std(0).clip(1e-9)
    Z1 = np.hstack([Z, np.ones((len(Z), 1))])
    w = np.zeros(Z1.shape[1])
    reg = l2 * np.eye(len(w))
    reg[-1, -1] = 0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Z1 @ w))
        grad = Z1.T @ (p - y) + reg @ w
        H = Z1.T @ (Z1 * (p * (1 - p))[:, None]) + reg + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(H, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def choice_regression(data: dict[str, np.ndarray], features: Sequence[str], n_boot: int = 300,
                      seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Turner et al.'s regression: does the agent go for the cheese at the decision square, as a
    function of the features? Returns per feature (coefficient, low, high): the 95% percentile
    bootstrap over decision squares (unit: mazes)."""
    X = np.stack([data[f] for f in features], -1)
    y = data["chooses_cheese"].astype(float)
    if y.min() == y.max():
        raise CourseError("the agent makes the same choice at every decision square: no regression to fit")
    coef, _ = standardised_logistic(X, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        boots.append(standardised_logistic(X[i], y[i])[0])
    boots = np.array(boots)
    return {f: (float(coef[j]), float(np.quantile(boots[:, j], 0.025)), float(np.quantile(boots[:, j], 0.975)))
            for j, f in enumerate(features)}


# ------------------------------------------------------------------ counterfactual cheese pairs
def cheese_pairs(n: int, seed: int = 0, cheese: str = "anywhere", **env_kwargs) -> dict[str, np.ndarray]:
    """`n` pairs of mazes identical but for the cheese square (same walls, same agent square), with the
    two cheese squares chosen so that the first step of the shortest path differs. cheese='train'
    keeps both cheese squares in the top-right region (the training distribution). Returns walls,
    agent, cheese_a, cheese_b, a_clean, a_corrupt (the path's first actions) and the
    observations clean (cheese a), corrupt (cheese b) [n, obs_dim]."""
    env = MazeEnv(n * 4, seed=seed, cheese="anywhere", auto_reset=False, **env_kwargs)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(env.n_envs):
        w, a = env.walls[i], env.agent[i]
        open_sq = np.argwhere(~w)
        open_sq = open_sq[~(open_sq == a).all(-1)]
        if cheese == "train":
            open_sq = open_sq[env.in_region(open_sq, np.full(len(open_sq), env.grid[i]))]
        if len(open_sq) < 2:
            continue
        for _ in range(8):
            ca, cb = open_sq[rng.choice(len(open_sq), 2, replace=False)]
            sa, sb = first_steps(w, a, ca), first_steps(w, a, cb)
            if not (sa & sb).any():
                rows.append((w, a, ca, cb, np.flatnonzero(sa)[0], np.flatnonzero(sb)[0]))
                break
        if len(rows) == n:
            break
    if len(rows) < 4:
        raise CourseError(f"only {len(rows)} cheese pairs whose paths differ: use more mazes or cheese='anywhere'")
    walls, agent, ca, cb, aa, ab = (np.stack(x) for x in zip(*rows))
    return {"walls": walls, "agent": agent, "cheese_a": ca, "cheese_b": cb, "a_clean": aa, "a_corrupt": ab,
            "clean": torch.from_numpy(encode(walls, agent, ca)), "corrupt": torch.from_numpy(encode(walls, agent, cb))}


def _logit_diff(logits: Tensor, a_clean: Tensor, a_corrupt: Tensor) -> Tensor:
    rows = torch.arange(len(logits))
    return logits[rows, a_corrupt] - logits[rows, a_clean]


@torch.no_grad()
def patch_channels(policy, clean: Tensor, corrupt: Tensor, layer: str, a_clean, a_corrupt,
                   channels) -> float:
    """The share of the logit difference (logit[a_corrupt] - logit[a_clean]) moved from its clean value
    to its corrupt value when the maps of `channels` (together) are copied from the corrupt run into
    the clean run, as a ratio of sums over pairs: sum(d_patched - d_clean) / sum(d_corrupt - d_clean).
    A ratio of sums is stable where a mean of per-pair ratios is not (a pair whose clean and corrupt
    differences nearly agree has a huge ratio)."""
    check_layer(policy, layer)
    a_clean, a_corrupt = torch.as_tensor(a_clean).long(), torch.as_tensor(a_corrupt).long()
    src = policy.run_with_cache(corrupt, names_filter=[layer])[1][layer]
    d_clean = _logit_diff(policy(clean), a_clean, a_corrupt)
    d_corrupt = _logit_diff(policy(corrupt), a_clean, a_corrupt)
    total = float((d_corrupt - d_clean).sum())
    if abs(total) < 1e-6:
        raise CourseError("the clean and corrupt observations give the same logit difference: nothing to patch")
    ch = torch.as_tensor(list(channels), dtype=torch.long)

    def hook(act, hook):
        act = act.clone()
        act[:, ch] = src[:, ch]
        return act
    d = _logit_diff(policy.run_with_hooks(clean, fwd_hooks=[(layer, hook)]), a_clean, a_corrupt)
    return float((d - d_clean).sum()) / total


@torch.no_grad()
def channel_patching(policy, clean: Tensor, corrupt: Tensor, layer: str, a_clean: Tensor, a_corrupt: Tensor) -> Tensor:
    """[channels]: for each channel of `layer`, the share of the logit difference (logit[a_corrupt] -
    logit[a_clean]) moved from its clean value towards its corrupt value when that one channel's map
    is copied from the corrupt run into the clean run (0 = no effect, 1 = the whole corrupt
    difference), as a ratio of sums over pairs: sum(d_patched - d_clean) / sum(d_corrupt - d_clean)."""
    check_layer(policy, layer)
    n_ch = policy.run_with_cache(clean[:1], names_filter=[layer])[1][layer].shape[1]
    return torch.tensor([patch_channels(policy, clean, corrupt, layer, a_clean, a_corrupt, [c]) for c in range(n_ch)])


def random_channel_baseline(policy, pairs: dict, layer: str, k: int, n_draws: int = 20, seed: int = 0,
                            exclude=()) -> np.ndarray:
    """[n_draws]: the share moved by patching `k` channels drawn at random (without those in
    `exclude`), the baseline a set of top channels must beat."""
    n_ch = policy.run_with_cache(pairs["clean"][:1], names_filter=[layer])[1][layer].shape[1]
    pool = np.setdiff1d(np.arange(n_ch), np.asarray(list(exclude), int))
    if k > len(pool):
        raise CourseError(f"cannot draw {k} random channels from {len(pool)}")
    rng = np.random.default_rng(seed)
    return np.array([patch_channels(policy, pairs["clean"], pairs["corrupt"], layer, pairs["a_clean"],
                                    pairs["a_corrupt"], rng.choice(pool, k, replace=False).tolist())
                     for _ in range(n_draws)])


def cheese_tracking(policy, walls: np.ndarray, agent: np.ndarray, cheese: np.ndarray, layer: str) -> Tensor:
    """[channels]: per channel, the mean over mazes of (activation at the cheese square with the
    cheese) minus (activation at that square without it), i.e. how much a channel lights up where
    the cheese is (Turner et al.'s cheese-tracking channels)."""
    check_layer(policy, layer)
    n = len(walls)
    with_c = torch.from_numpy(encode(walls, agent, cheese))
    without = torch.from_numpy(encode(walls, agent, np.full((n, 2), -1)))
    with torch.no_grad():
        a = policy.run_with_cache(with_c, names_filter=[layer])[1][layer]
        b = policy.run_with_cache(without, names_filter=[layer])[1][layer]
    rows = torch.arange(n)
    r, c = torch.as_tensor(cheese[:, 0]), torch.as_tensor(cheese[:, 1])
    return (a[rows, :, r, c] - b[rows, :, r, c]).mean(0)


# ------------------------------------------------------------------ the cheese vector
@torch.no_grad()
def cheese_vectors(policy, walls: np.ndarray, agent: np.ndarray, cheese: np.ndarray, layer: str) -> Tensor:
    """[n, channels, H, W]: per maze, activation(with cheese) - activation(cheese removed) at `layer`,
    with the agent on its start square (Turner et al.'s cheese vector)."""
    check_layer(policy, layer)
    n = len(walls)
    with_c = torch.from_numpy(encode(walls, agent, cheese))
    without = torch.from_numpy(encode(walls, agent, np.full((n, 2), -1)))
    a = policy.run_with_cache(with_c, names_filter=[layer])[1][layer]
    b = policy.run_with_cache(without, names_filter=[layer])[1][layer]
    return a - b


def random_like(vectors: Tensor, seed: int) -> Tensor:
    """Random directions with each row's norm (the control of a per-maze steering vector)."""
    r = torch.randn(vectors.shape, generator=torch.Generator().manual_seed(seed))
    flat, rf = vectors.flatten(1), r.flatten(1)
    return (rf / rf.norm(dim=1, keepdim=True) * flat.norm(dim=1, keepdim=True)).reshape(vectors.shape)


def subtract_hook(vectors: Tensor, coeff: float = 1.0) -> Callable:
    """A hook that adds -coeff * vectors[i] to maze i's activation (the batch is the mazes)."""
    def hook(act, hook):
        if act.shape != vectors.shape:
            raise CourseError(f"steering vectors of shape {tuple(vectors.shape)} do not match {hook.name}'s "
                              f"activation {tuple(act.shape)}: one [channels, H, W] vector per maze")
        return act - coeff * vectors
    return hook


def check_vectors(policy, layer: str, vectors: Tensor, n: int) -> None:
    check_layer(policy, layer)
    want = (n, policy.channels[int(layer.split(".")[1])], *policy.obs_shape[1:])
    if not isinstance(vectors, Tensor) or tuple(vectors.shape) != want:
        got = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
        raise CourseError(f"a steering vector for {layer} must have shape {want} (one per maze), got {got}")


def maze_env_from(layouts: dict[str, np.ndarray], max_steps: int | None = None, cheese_key: str = "cheese",
                  **env_kwargs) -> MazeEnv:
    """A MazeEnv (auto_reset=False) holding the given layouts (walls, agent, cheese)."""
    n = len(layouts["walls"])
    env = MazeEnv(n, auto_reset=False, max_steps=max_steps, **env_kwargs)
    env.set_state(layouts["walls"], layouts["agent"], layouts[cheese_key])
    return env


def steered_success(policy, layouts: dict[str, np.ndarray], layer: str, vectors: Tensor | None, coeff: float = 1.0,
                    seed: int = 0, **env_kwargs) -> dict[str, np.ndarray]:
    """Run the layouts once each with `vectors` (one per maze) subtracted at `layer` at every step
    (None: no intervention). Per-episode success, corner_first, length."""
    n = len(layouts["walls"])
    if vectors is not None:
        check_vectors(policy, layer, vectors, n)
    env = maze_env_from(layouts, **env_kwargs)
    hooks = [(layer, subtract_hook(vectors, coeff))] if vectors is not None else []
    return run_maze(policy, env, hooks, seed=seed)


# ------------------------------------------------------------------ retargeting by channel edits
def retarget_hook(channels: Sequence[int], target: np.ndarray, value: Tensor | float) -> Callable:
    """A hook that sets `channels` of maze i's map at square target[i] to `value` (per channel)."""
    ch = torch.as_tensor(list(channels), dtype=torch.long)
    r, c = torch.as_tensor(target[:, 0]), torch.as_tensor(target[:, 1])
    val = torch.as_tensor(value, dtype=torch.float32)

    def hook(act, hook):
        act = act.clone()
        rows = torch.arange(act.shape[0])[:, None]
        act[rows, ch[None, :], r[:, None], c[:, None]] = val
        return act
    return hook


def retarget_rate(policy, layouts: dict[str, np.ndarray], layer: str, channels: Sequence[int], target: np.ndarray,
                  value: Tensor | float, seed: int = 0, hook_fn: Callable = None, **env_kwargs) -> np.ndarray:
    """Per maze: did the agent (cheese removed from the maze) step on `target` when `channels` of
    `layer` are set to `value` at the target square at every step? channels=[] is the unedited run.
    `hook_fn(channels, target, value)` builds the editing hook (default `retarget_hook`; the chapter
    passes the learner's)."""
    check_layer(policy, layer)
    n_ch = policy.channels[int(layer.split(".")[1])]
    if any((not isinstance(c, (int, np.integer))) or not 0 <= c < n_ch for c in channels):
        raise CourseError(f"channels must be ints in [0, {n_ch}) for {layer}, got {list(channels)}")
    lay = dict(layouts, cheese=np.full((len(layouts["walls"]), 2), -1))
    env = maze_env_from(lay, **env_kwargs)
    hooks = [(layer, (hook_fn or retarget_hook)(channels, target, value))] if len(channels) else []
    return run_maze(policy, env, hooks, seed=seed, target=target)["reached_target"]


# ------------------------------------------------------------------ Turner et al.'s further tests
@torch.no_grad()
def channel_maps(policy, walls: np.ndarray, agent: np.ndarray, cheese: np.ndarray, layer: str,
                 channels: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(with cheese, without cheese): the maps [n, len(channels), H, W] of `channels` at `layer`,
    for heatmaps over the maze."""
    check_layer(policy, layer)
    n = len(walls)
    ch = list(channels)
    a = policy.run_with_cache(torch.from_numpy(encode(walls, agent, cheese)), names_filter=[layer])[1][layer]
    b = policy.run_with_cache(torch.from_numpy(encode(walls, agent, np.full((n, 2), -1))),
                              names_filter=[layer])[1][layer]
    return a[:, ch], b[:, ch]


def _tv(p: Tensor, q: Tensor) -> Tensor:
    return 0.5 * (p - q).abs().sum(-1)


@torch.no_grad()
def resampling_test(policy, layer: str, channels: Sequence[int], n: int = 200, seed: int = 0,
                    **env_kwargs) -> dict[str, np.ndarray]:
    """Turner et al.'s resampling test for cheese channels. For each maze A (cheese anywhere), the
    maps of `channels` are replaced by those of another maze B (other walls, other agent square)
    whose cheese sits **on A's cheese square** ("same"), or of a maze C whose cheese sits elsewhere
    ("different"). If the channels carry where the cheese is (and little else), the same-cheese
    resample barely moves A's action distribution while the different-cheese one does. Returns
    per-maze total-variation distances from A's own distribution: same, different."""
    check_layer(policy, layer)
    lay = maze_layouts(3 * n, seed=seed, cheese="anywhere", **env_kwargs)
    walls, agent, cheese = lay["walls"], lay["agent"], lay["cheese"]
    rng = np.random.default_rng(seed)
    rows_a, src_same, src_diff = [], [], []
    for i in range(len(walls)):
        others = [j for j in rng.permutation(len(walls))[:40] if j != i]
        same = [j for j in others if not walls[j][tuple(cheese[i])] and not (agent[j] == cheese[i]).all()]
        diff = [j for j in others if not (cheese[j] == cheese[i]).all()]
        if same and diff:
            rows_a.append(i)
            src_same.append((walls[same[0]], agent[same[0]], cheese[i]))
            src_diff.append((walls[diff[0]], agent[diff[0]], cheese[diff[0]]))
        if len(rows_a) == n:
            break
    if len(rows_a) < 10:
        raise CourseError(f"only {len(rows_a)} mazes with a resampling partner: use more mazes")
    ia = np.array(rows_a)
    obs_a = torch.from_numpy(encode(walls[ia], agent[ia], cheese[ia]))
    base = torch.softmax(policy(obs_a), -1)
    ch = torch.as_tensor(list(channels), dtype=torch.long)
    out = {}
    for key, src in (("same", src_same), ("different", src_diff)):
        w, a, c = (np.stack(x) for x in zip(*src))
        donor = policy.run_with_cache(torch.from_numpy(encode(w, a, c)), names_filter=[layer])[1][layer]

        def hook(act, hook, donor=donor):
            act = act.clone()
            act[:, ch] = donor[:, ch]
            return act
        p = torch.softmax(policy.run_with_hooks(obs_a, fwd_hooks=[(layer, hook)]), -1)
        out[key] = _tv(base, p).numpy()
    return out


@torch.no_grad()
def decision_square_steering(policy, data: dict[str, np.ndarray], layer: str, vectors: Tensor | None,
                             coeff: float = 1.0) -> np.ndarray:
    """P(the cheese-ward action) at each decision square of `data` (from `decision_square_data`) with
    `vectors` [n, channels, H, W] subtracted at `layer` (None: unsteered). Turner et al. report the
    median over mazes."""
    obs = torch.as_tensor(data["obs"])
    hooks = [(layer, subtract_hook(vectors, coeff))] if vectors is not None else []
    p = torch.softmax(policy.run_with_hooks(obs, fwd_hooks=hooks) if hooks else policy(obs), -1).numpy()
    a = np.asarray([int(x) for x in data["a_cheese_action"]])
    return p[np.arange(len(a)), a]


# ------------------------------------------------------------------ 8.7: predicting misgeneralisation
@torch.no_grad()
def cheese_sensitivity(policy, pairs: dict[str, Tensor]) -> float:
    """Mean total-variation distance between the action distributions of the two mazes of each pair
    (same maze, cheese moved): how much the cheese's position drives the policy. With pairs drawn
    from the training distribution (cheese='train') it needs no shifted data."""
    p = torch.softmax(policy(pairs["clean"]), -1)
    q = torch.softmax(policy(pairs["corrupt"]), -1)
    return float(0.5 * (p - q).abs().sum(-1).mean())


@torch.no_grad()
def cheese_channel_share(policy, layouts: dict[str, np.ndarray], layer: str) -> float:
    """Internal predictor: the norm of the cheese vector at `layer` relative to the norm of the
    activation itself, averaged over training-distribution mazes (how much of the layer the cheese
    moves)."""
    v = cheese_vectors(policy, layouts["walls"], layouts["agent"], layouts["cheese"], layer)
    act = policy.run_with_cache(torch.from_numpy(encode(layouts["walls"], layouts["agent"], layouts["cheese"])),
                                names_filter=[layer])[1][layer]
    return float((v.flatten(1).norm(dim=1) / act.flatten(1).norm(dim=1).clamp_min(1e-9)).mean())


def probe_strength(policy, layer: str, n: int = 600, seed: int = 0, **env_kwargs) -> float:
    """Internal predictor: held-out accuracy of a linear probe (utils.interp.probes.train_probe) for
    the cheese's square among the training region's squares, read from `layer` (flattened) on
    training-distribution mazes. High: the layer says where the cheese is."""
    from utils.interp.probes import train_probe
    lay = maze_layouts(n, seed=seed, cheese="train", **env_kwargs)
    with torch.no_grad():
        acts = policy.run_with_cache(torch.from_numpy(encode(lay["walls"], lay["agent"], lay["cheese"])),
                                     names_filter=[layer])[1][layer].flatten(1)
    _, labels = np.unique(lay["cheese"][:, 0] * 1000 + lay["cheese"][:, 1], return_inverse=True)
    return float(train_probe(acts, torch.as_tensor(labels), seed=seed).test_acc)


def patching_mass(policy, pairs: dict, layer: str, k: int) -> float:
    """Internal predictor: the share of the cheese's effect on the action carried by the `k` channels
    that carry most of it alone (ratio of sums, training-distribution pairs)."""
    eff = channel_patching(policy, pairs["clean"], pairs["corrupt"], layer, pairs["a_clean"], pairs["a_corrupt"])
    top = torch.argsort(eff, descending=True)[:k].tolist()
    return patch_channels(policy, pairs["clean"], pairs["corrupt"], layer, pairs["a_clean"], pairs["a_corrupt"], top)


def within_level_ranks(values, levels) -> np.ndarray:
    """Ranks computed separately within each level (ties averaged), scaled to [0, 1], so that a rank
    correlation over the pooled agents measures association *within* levels only."""
    from scipy.stats import rankdata
    values, levels = np.asarray(values, float), np.asarray(levels)
    out = np.zeros(len(values))
    for lv in np.unique(levels):
        m = levels == lv
        out[m] = (rankdata(values[m]) - 1) / max(m.sum() - 1, 1)
    return out


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy.stats import rankdata
    rx, ry = rankdata(np.asarray(x, float)), rankdata(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        raise CourseError("a constant variable has no rank correlation")
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_interval(x, y, alpha: float = 0.05) -> tuple[float, float, float]:
    """(rho, low, high): Spearman's rho with the Fisher-z interval (standard error 1.03 / sqrt(n - 3),
    Fieller et al. 1957); the unit is the agents (n >= 4)."""
    n = len(x)
    if n < 4 or len(y) != n:
        raise CourseError(f"a rank-correlation interval needs 4 or more paired agents, got {n}")
    rho = spearman(x, y)
    z = math.atanh(max(min(rho, 0.999999), -0.999999))
    half = _norm_q(1 - alpha / 2) * 1.03 / math.sqrt(n - 3)
    return rho, math.tanh(z - half), math.tanh(z + half)


def _norm_q(q: float) -> float:
    from statistics import NormalDist
    return NormalDist().inv_cdf(q)


__all__ = ["conv_layers", "patch_channels", "random_channel_baseline", "cheese_pairs", "channel_patching", "cheese_tracking", "cheese_vectors", "random_like",
           "steered_success", "retarget_rate", "decision_square_data", "choice_regression", "cheese_sensitivity",
           "cheese_channel_share", "probe_strength", "patching_mass", "within_level_ranks", "resampling_test", "decision_square_steering", "channel_maps", "spearman", "spearman_interval", "first_steps", "t_quantile", "AGENT", "CHEESE",
           "maze_layouts"]
