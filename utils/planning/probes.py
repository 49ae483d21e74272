"""Decoding the plan: per-square labels of where the agent and the boxes will move, and
per-square linear probes of the hidden state scored by macro-F1 (Bush et al. 2025).

Labels, for every square (r, c) at step t of an episode, with horizon k (None: the rest of the
episode, the anchors' setup of Taufeeque et al. 2024 and Bush et al. 2025):
- `agent`: the direction (1 up, 2 down, 3 left, 4 right) in which the agent next LEAVES (r, c)
  during steps t .. t+k-1, or 0 if it does not leave it in that window;
- `box`: the direction in which a box is next PUSHED off (r, c) in that window, or 0.

A probe is one linear map from the C channels of a layer at a square to these 5 classes, the
same map at every square (a 1x1 convolution). Rows are (episode, step, floor square); the split
keeps every level on one side (`groups` = level), and the score is the macro-F1 over the four
direction classes on the held-out levels, with a 95% interval from a bootstrap over held-out
levels. Controls: the same probe on the observation around the square (3x3 neighbourhood,
`obs_features`), and on a random-init agent's states for the same observations.

A probe that only reads the agent's next action scores well on the agent's own square and
nowhere else; a plan shows on the squares AWAY from the agent. `f1_by_distance` scores a probe's
held-out rows by their Manhattan distance from the agent (the agent's own square, distance 0,
reported apart), and `plot_plan` draws the decoded plan as arrows on the board.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.core import CourseError
from utils.interp.probes import _split, train_probe
from utils.planning.play import Play
from utils.rl.recurrent_ppo import unroll

TARGETS = ("agent", "box")
CLASS_NAMES = ("none", "up", "down", "left", "right")


def plan_labels(p: Play, horizon: int | None = 8) -> dict[str, np.ndarray]:
    """{'agent': [n, T, H, W], 'box': [n, T, H, W]} int labels (see the module docstring);
    T = p.actions.shape[1]. Steps after an episode's end are labelled 0 (and masked by p.live).
    `horizon=None` labels each square with its next event over the rest of the episode."""
    if horizon is None:
        horizon = p.actions.shape[1]
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise CourseError(f"horizon must be a positive int (steps ahead) or None (the rest of the episode), "
                          f"got {horizon!r}")
    n, T = p.actions.shape
    H = p.boxes.shape[-1]
    # what happens at each step: the agent leaves square `pos` in direction a (it moved), and
    # a pushed box leaves square pos + d in direction a
    moves = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])
    rows = np.arange(n)
    ev_agent = np.zeros((n, T, H, H), np.int64)
    ev_box = np.zeros((n, T, H, H), np.int64)
    for t in range(T):
        a = p.actions[:, t]
        moved = (a >= 0) & (a < 4) & (p.agent[:, t + 1] != p.agent[:, t]).any(1)
        pos = p.agent[:, t]
        ev_agent[rows[moved], t, pos[moved, 0], pos[moved, 1]] = a[moved] + 1
        pb = p.pushed[:, t] & moved
        bpos = pos[pb] + moves[a[pb]]
        ev_box[rows[pb], t, bpos[:, 0], bpos[:, 1]] = a[pb] + 1
    return {"agent": window_labels(ev_agent, horizon), "box": window_labels(ev_box, horizon)}


def window_labels(events: np.ndarray, horizon: int) -> np.ndarray:
    """events [n, T, H, W] (a direction 1-4 where something leaves the square at step t, else 0)
    -> labels of the same shape: at step t, the EARLIEST event at that square during steps
    t .. t + horizon - 1 (0 if none)."""
    events = np.asarray(events)
    if events.ndim != 4:
        raise CourseError(f"events must be [n, T, H, W], got shape {events.shape}")
    T = events.shape[1]
    lab = np.zeros_like(events)
    for t in range(T):
        # the earliest event in the window wins: fill from the far end backwards
        for s in range(min(T, t + horizon) - 1, t - 1, -1):
            hit = events[:, s] > 0
            lab[:, t][hit] = events[:, s][hit]
    return lab


def obs_features(obs: Tensor) -> Tensor:
    """[..., 5, H, W] -> [..., 45, H, W]: the observation in the 3x3 neighbourhood of every square
    (walls outside the board): the observation-only control of a square probe."""
    lead = obs.shape[:-3]
    x = obs.reshape(-1, *obs.shape[-3:]).float()
    x = F.pad(x, (1, 1, 1, 1))
    x[:, 0, 0, :] = x[:, 0, -1, :] = 1
    x[:, 0, :, 0] = x[:, 0, :, -1] = 1
    patches = F.unfold(x, 3).reshape(x.shape[0], -1, obs.shape[-2], obs.shape[-1])
    return patches.reshape(*lead, patches.shape[1], obs.shape[-2], obs.shape[-1])


@torch.no_grad()
def record_on_observations(model: nn.Module, obs: Tensor, live: np.ndarray, names) -> dict[str, Tensor]:
    """Feed observation sequences obs [n, T, 5, H, W] (episodes from the zero state) to `model`
    and record hooks `names` at every step: {name: [n, T, ...]}. Used to put a random-init agent
    (the control) through the trained agent's episodes."""
    store = {k: [] for k in names}

    def rec(act, hook):
        store[hook.name].append(act.detach().clone())

    n, T = obs.shape[:2]
    starts = torch.zeros(T, n)
    starts[0] = 1
    with model.hooks(fwd_hooks=[(k, rec) for k in names]):
        unroll(model, obs.transpose(0, 1), starts, model.initial_state(n))
    return {k: torch.stack(v, 1) for k, v in store.items()}


def agent_distance(p: Play) -> np.ndarray:
    """[n, T, H, W]: each square's Manhattan distance from the agent's square at step t."""
    n, T = p.actions.shape
    H, W = p.boxes.shape[-2:]
    rr, cc = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    a = p.agent[:, :T]
    return np.abs(rr - a[..., 0, None, None]) + np.abs(cc - a[..., 1, None, None])


def square_rows(acts: Tensor, labels: np.ndarray, p: Play, with_distance: bool = False):
    """Flatten [n, T, C, H, W] activations and [n, T, H, W] labels to (features [m, C], labels [m],
    groups [m] = level) over played steps (p.live) and floor squares (not p.walls); with
    `with_distance`, also each row's distance from the agent (`agent_distance`)."""
    if acts.ndim != 5 or tuple(acts.shape[:2]) != tuple(labels.shape[:2]) or tuple(acts.shape[-2:]) != labels.shape[-2:]:
        raise CourseError(f"activations must be [n, T, C, H, W] matching labels {labels.shape}, got {tuple(acts.shape)}")
    n, T, C, H, W = acts.shape
    floor = ~p.walls
    mask = p.live[:, :T, None, None] & floor[:, None]
    feats = acts.permute(0, 1, 3, 4, 2)[torch.from_numpy(mask)]
    groups = np.broadcast_to(p.levels[:, None, None, None], mask.shape)[mask]
    if with_distance:
        return feats, torch.from_numpy(labels[mask]), groups, agent_distance(p)[:, :T][mask]
    return feats, torch.from_numpy(labels[mask]), groups


def macro_f1(pred: np.ndarray, true: np.ndarray, classes=(1, 2, 3, 4)) -> float:
    """Mean over `classes` of F1 = 2 TP / (2 TP + FP + FN) (a class absent and never predicted
    is skipped)."""
    pred, true = np.asarray(pred), np.asarray(true)
    f1s = []
    for c in classes:
        tp = np.sum((pred == c) & (true == c))
        denom = 2 * tp + np.sum((pred == c) & (true != c)) + np.sum((pred != c) & (true == c))
        if denom:
            f1s.append(2 * tp / denom)
    return float(np.mean(f1s)) if f1s else 0.0


def class_direction(weight: Tensor, cls: int) -> Tensor:
    """The unit vector in activation space of class `cls` (1-4) of a probe with weight [5, C]:
    its row minus the mean of the rows (softmax ignores a shift shared by every class)."""
    if cls not in (1, 2, 3, 4):
        raise CourseError(f"class must be a direction 1-4 ({', '.join(CLASS_NAMES[1:])}), got {cls!r}")
    w = weight[cls] - weight.mean(0)
    return w / w.norm().clamp_min(1e-12)


@dataclass
class SquareProbe:
    f1: float
    low: float
    high: float
    weight: Tensor = field(repr=False)   # [5, C] in activation space
    bias: Tensor = field(repr=False)
    n_test_levels: int = 0
    test_rows: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, int))   # held-out rows

    def direction(self, cls: int) -> Tensor:
        """Unit vector of class `cls` (1-4) against the mean of the classes."""
        return class_direction(self.weight, cls)

    def predict(self, feats: Tensor) -> Tensor:
        return (feats.float() @ self.weight.T + self.bias).argmax(-1)


def fit_square_probe(feats: Tensor, labels: Tensor, groups: np.ndarray, seed: int = 0, epochs: int = 200,
                     n_boot: int = 500, balance: bool = True) -> SquareProbe:
    """A 5-class linear probe on square features with a split by level; macro-F1 on held-out
    levels (directions only) with a bootstrap interval over those levels. `balance` weights the
    rare direction classes up by subsampling the 'none' rows of the training split."""
    feats = torch.as_tensor(feats).float()
    labels = torch.as_tensor(labels).long()
    groups = np.asarray(groups)
    if len(torch.unique(labels)) < 2:
        raise CourseError("the labels have a single class: play longer episodes or raise the horizon")
    tr, te = _split(len(feats), 0.25, seed, groups)
    keep = np.ones(len(feats), bool)
    if balance:  # keep at most 3 'none' rows per direction row in the training split
        rng = np.random.default_rng(seed)
        none_tr = tr[labels[tr].numpy() == 0]
        n_dir = int((labels[tr] > 0).sum())
        if len(none_tr) > 3 * max(n_dir, 1):
            drop = rng.choice(none_tr, len(none_tr) - 3 * max(n_dir, 1), replace=False)
            keep[drop] = False
    # train_probe makes its own grouped split; give it the training rows only (test_frac small)
    sel = tr[keep[tr]]
    res = train_probe(feats[sel], labels[sel], test_frac=0.05, seed=seed, epochs=epochs, groups=groups[sel])
    weight = res.weight
    if weight.shape[0] < 5:
        weight = torch.cat([weight, torch.full((5 - weight.shape[0], weight.shape[1]), 0.0)])
        bias = torch.cat([res.bias, torch.full((5 - res.bias.shape[0],), -1e9)])
    else:
        bias = res.bias
    probe = SquareProbe(0.0, 0.0, 0.0, weight, bias)
    pred = probe.predict(feats[te]).numpy()
    true = labels[te].numpy()
    g = groups[te]
    f1 = macro_f1(pred, true)
    uniq = np.unique(g)
    rows_of = {u: np.flatnonzero(g == u) for u in uniq}
    rng = np.random.default_rng(seed + 1)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([rows_of[u] for u in rng.choice(uniq, len(uniq))])
        boots.append(macro_f1(pred[idx], true[idx]))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    probe.f1, probe.low, probe.high, probe.n_test_levels = f1, float(lo), float(hi), len(uniq)
    probe.test_rows = np.asarray(te)
    return probe


DISTANCE_BINS = ((0, 0), (1, 1), (2, 3), (4, None))   # the agent's own square, next to it, near, far


def _bin_name(lo: int, hi: int | None) -> str:
    return "agent's square" if (lo, hi) == (0, 0) else (f"{lo}" if lo == hi else f"{lo}+" if hi is None
                                                         else f"{lo}-{hi}")


def f1_by_distance(probe: SquareProbe, feats: Tensor, labels: Tensor, groups: np.ndarray, distance: np.ndarray,
                   bins=DISTANCE_BINS, n_boot: int = 500, seed: int = 0) -> dict[str, dict]:
    """The probe's macro-F1 on its HELD-OUT rows, split by the square's distance from the agent:
    {bin: {'f1', 'low', 'high', 'n_rows', 'n_direction_rows'}}, the interval a bootstrap over
    held-out levels. The agent's own square (distance 0) is its own bin: a probe that reads the
    next action lives there."""
    feats, labels = torch.as_tensor(feats).float(), torch.as_tensor(labels).long()
    groups, distance = np.asarray(groups), np.asarray(distance)
    if not (len(feats) == len(labels) == len(groups) == len(distance)):
        raise CourseError(f"feats, labels, groups and distance need one row each, got {len(feats)}, {len(labels)}, "
                          f"{len(groups)}, {len(distance)}: take them from one square_rows(..., with_distance=True)")
    te = probe.test_rows
    if te.size == 0:
        raise CourseError("this probe has no held-out rows: fit it with fit_square_probe on these rows")
    pred = probe.predict(feats[te]).numpy()
    true, g, d = labels[te].numpy(), groups[te], distance[te]
    rng = np.random.default_rng(seed)
    out = {}
    for lo, hi in bins:
        sel = (d >= lo) & ((d <= hi) if hi is not None else True)
        name = _bin_name(lo, hi)
        if not sel.any():
            out[name] = {"f1": float("nan"), "low": float("nan"), "high": float("nan"), "n_rows": 0,
                         "n_direction_rows": 0}
            continue
        p_, t_, g_ = pred[sel], true[sel], g[sel]
        uniq = np.unique(g_)
        rows_of = {u: np.flatnonzero(g_ == u) for u in uniq}
        boots = [macro_f1(p_[idx], t_[idx]) for idx in
                 (np.concatenate([rows_of[u] for u in rng.choice(uniq, len(uniq))]) for _ in range(n_boot))]
        lo_ci, hi_ci = np.quantile(boots, [0.025, 0.975])
        out[name] = {"f1": macro_f1(p_, t_), "low": float(lo_ci), "high": float(hi_ci), "n_rows": int(sel.sum()),
                     "n_direction_rows": int((t_ > 0).sum())}
    return out


ARROWS = {1: (0, -0.35), 2: (0, 0.35), 3: (-0.35, 0), 4: (0.35, 0)}   # (dx, dy) in image coordinates


def plot_plan(p: Play, labels: np.ndarray, episode: int, step: int, ax=None, title: str | None = None,
              color: str = "tab:red"):
    """Draw the board of `episode` at `step` (walls, boxes, agent) with an arrow on every
    square whose label is a direction 1-4: a decoded plan (probe predictions) or the true labels."""
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    n, T = p.actions.shape
    if labels.shape[:2] != (n, T) or labels.ndim != 4:
        raise CourseError(f"labels must be [n, T, H, W] = [{n}, {T}, H, W] like plan_labels, got {labels.shape}")
    if not (0 <= episode < n and 0 <= step < T):
        raise CourseError(f"episode must be in 0..{n - 1} and step in 0..{T - 1}, got {episode}, {step}")
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    walls = p.walls[episode]
    H, W = walls.shape
    img = np.where(walls, 0.25, 0.97)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    br, bc = np.nonzero(p.boxes[episode, step])
    ax.scatter(bc, br, marker="s", s=140, color="tab:brown", label="box")
    ar, ac = p.agent[episode, step]
    ax.scatter([ac], [ar], marker="o", s=120, color="tab:green", label="agent")
    lab = labels[episode, step]
    for r in range(H):
        for c in range(W):
            if lab[r, c] in ARROWS and not walls[r, c]:
                dx, dy = ARROWS[int(lab[r, c])]
                ax.arrow(c - dx / 2, r - dy / 2, dx, dy, head_width=0.18, length_includes_head=True, color=color)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"episode {episode}, step {step}", fontsize=9)
    return ax


PLAN_BINS = (*DISTANCE_BINS, (1, None))   # ... and every square away from the agent ("1+")


def plan_probe_by_distance(p: Play, acts: Tensor, target: str = "agent", seed: int = 0, epochs: int = 150,
                           bins=PLAN_BINS) -> tuple[SquareProbe, dict[str, dict]]:
    """The anchors' probe, end to end: label every square with its next event over the REST of
    the episode (`plan_labels(p, None)[target]`), fit one square probe on `acts` [n, T, C, H, W]
    (recorded during `p`) with the split by level, and score it on the held-out levels by distance
    from the agent (`f1_by_distance`; the agent's own square apart, "1+" = every other square).
    Returns (probe, {bin: {'f1', 'low', 'high', 'n_rows', 'n_direction_rows'}})."""
    if target not in TARGETS:
        raise CourseError(f"unknown plan target {target!r}: use one of {TARGETS}")
    labels = plan_labels(p, None)[target]
    feats, y, groups, dist = square_rows(acts, labels, p, with_distance=True)
    probe = fit_square_probe(feats, y, groups, seed=seed, epochs=epochs)
    return probe, f1_by_distance(probe, feats, y, groups, dist, bins=bins, seed=seed)


@torch.no_grad()
def decode_plan(probe: SquareProbe, acts: Tensor, p: Play) -> np.ndarray:
    """The probe's prediction at every square and step, [n, T, H, W] (0 = none, 1-4 = direction;
    0 on walls and after an episode's end), from activations [n, T, C, H, W] recorded during `p`:
    the decoded plan that `plot_plan` draws."""
    if acts.ndim != 5 or tuple(acts.shape[:2]) != tuple(p.actions.shape):
        raise CourseError(f"activations must be [n, T, C, H, W] with [n, T] = {p.actions.shape}, got {tuple(acts.shape)}")
    pred = probe.predict(acts.permute(0, 1, 3, 4, 2)).numpy()
    mask = p.live[:, :, None, None] & ~p.walls[:, None]
    return np.where(mask, pred, 0)
