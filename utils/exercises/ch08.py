"""Checks for chapter 08 (planning in a model-free recurrent agent). References live in
utils.envs.sokoban (solve), utils.rl.recurrent_ppo (reset_state) and utils.planning (data,
play, probes, intervene).

Every check draws its inputs from a local `torch.Generator` / numpy generator, checks that the
caller's inputs are not written into, and compares with the reference on more than one case."""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from utils.core import torch_threads
from utils.envs.sokoban import MOVES, Level, LevelBank, replay, solve
from utils.exercises import ExerciseFailed, assert_unchanged, check
from utils.planning import data as D
from utils.planning import intervene as IV
from utils.planning import play as P
from utils.planning import probes as PR
from utils.rl.recurrent_ppo import reset_state


def _quiet(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(1), torch.random.fork_rng(devices=[]):
            return fn(*args, **kwargs)
    return wrapper


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    got = got if isinstance(got, Tensor) else torch.as_tensor(np.asarray(got))
    want = want if isinstance(want, Tensor) else torch.as_tensor(np.asarray(want))
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got.double(), want.double(), atol=atol, rtol=1e-4):
        raise ExerciseFailed(f"{what}: values differ from the reference "
                             f"(max error {(got.double() - want.double()).abs().max():.4g})")


def _unsolvable() -> Level:
    walls = np.ones((6, 6), bool)
    walls[1:5, 1:5] = False
    return Level(walls, ((3, 3),), ((1, 1),), (2, 2))   # the box sits in a corner: it can never move


@check
@_quiet
def check_solve(fn) -> None:
    """solve(level) -> an optimal tuple of moves (0 up, 1 down, 2 left, 3 right), or None if unsolvable."""
    bank = LevelBank(4, "test", seed=11, size=6, n_boxes=1, min_moves=5)
    bank2 = LevelBank(2, "test", seed=12, size=7, n_boxes=2, min_moves=6)
    for i, lv in enumerate([*bank.levels, *bank2.levels]):
        got = fn(lv)
        want = solve(lv)
        if got is None:
            raise ExerciseFailed(f"level {i} is solvable (in {len(want)} moves) but you returned None")
        got = tuple(int(a) for a in got)
        if not replay(lv, got)[0]:
            raise ExerciseFailed(f"level {i}: your moves {got} do not solve it (a box blocked, or a move missing)")
        if len(got) != len(want):
            raise ExerciseFailed(f"level {i}: your solution has {len(got)} moves, the optimum has {len(want)}: "
                                 "search breadth-first (a FIFO queue) and stop at the first solved state")
    if fn(_unsolvable()) is not None:
        raise ExerciseFailed("a box in a corner can never reach its target: return None when the search runs out")


@check
@_quiet
def check_reset_state(fn) -> None:
    """reset_state(state, starts) -> the state tuple with rows where starts is 1 zeroed."""
    g = torch.Generator().manual_seed(0)
    for b in (5, 8):
        state = (torch.randn(b, 2, 3, 4, 4, generator=g), torch.randn(b, 2, 3, 4, 4, generator=g))
        starts = (torch.rand(b, generator=g) < 0.5).float()
        starts[0], starts[1] = 1.0, 0.0
        copy = tuple(s.clone() for s in state)
        got = fn(state, starts.clone())
        for k in range(2):
            assert_unchanged(f"state[{k}]", copy[k], state[k])
        want = reset_state(copy, starts)
        if not isinstance(got, tuple) or len(got) != 2:
            raise ExerciseFailed("return a tuple (h, c) like the state you were given")
        for k, name in enumerate(("h", "c")):
            _close(got[k], want[k], f"{name} after the reset")
    if fn((), torch.ones(3)) != ():
        raise ExerciseFailed("a feed-forward agent's state is the empty tuple: return it unchanged")


@check
@_quiet
def check_discounted_returns(fn) -> None:
    """discounted_returns(rewards [T, n], mask [T, n], gamma) -> [T, n]."""
    g = torch.Generator().manual_seed(0)
    for gamma in (0.9, 0.5):
        T, n = 7, 4
        lengths = torch.tensor([7, 3, 1, 5])
        mask = (torch.arange(T).view(-1, 1) < lengths.view(1, -1)).float()
        rewards = torch.randn(T, n, generator=g) * mask
        r2, m2 = rewards.clone(), mask.clone()
        got = fn(r2, m2, gamma)
        assert_unchanged("rewards", rewards, r2)
        _close(got, D.discounted_returns(rewards, mask, gamma), f"returns with gamma={gamma}")


@check
@_quiet
def check_pacing(fn) -> None:
    """pacing(actions [n, T], first) -> {noop, back_and_forth, pacing}: [n] fractions of the first steps."""
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 5, (30, 9))
    acts[0, :4] = [0, 1, 0, 1]
    acts[1, :4] = [4, 4, 2, 2]
    acts[2, 3:] = -1
    acts[3, 1:] = -1
    for first in (5, 3):
        a2 = acts.copy()
        got = fn(a2, first)
        if not np.array_equal(a2, acts):
            raise ExerciseFailed("you wrote into the caller's actions: work on a copy")
        want = P.pacing(acts, first)
        if set(got) != set(want):
            raise ExerciseFailed(f"return a dict with keys {sorted(want)}, got {sorted(got)}")
        for k in want:
            _close(got[k], want[k], f"{k} over the first {first} steps")


@check
@_quiet
def check_window_labels(fn) -> None:
    """window_labels(events [n, T, H, W], horizon) -> the earliest event in steps t .. t+horizon-1."""
    rng = np.random.default_rng(0)
    ev = rng.integers(1, 5, (3, 12, 4, 4)) * (rng.random((3, 12, 4, 4)) < 0.3)
    for horizon in (1, 3, 6):
        e2 = ev.copy()
        got = fn(e2, horizon)
        if not np.array_equal(e2, ev):
            raise ExerciseFailed("you wrote into the caller's events: work on a copy")
        _close(np.asarray(got), PR.window_labels(ev, horizon), f"labels with horizon {horizon}", atol=0)


@check
@_quiet
def check_obs_features(fn) -> None:
    """obs_features(obs [..., 5, H, W]) -> [..., 45, H, W], the 3x3 neighbourhood with walls outside."""
    bank = LevelBank(6, "test", seed=3, size=6, min_moves=3)
    from utils.envs.sokoban import Sokoban
    env = Sokoban(6, bank, auto_reset=False)
    obs = env.set_levels(np.arange(6))
    for x in (obs, obs.view(2, 3, 5, 6, 6)):
        x2 = x.clone()
        got = fn(x2)
        assert_unchanged("obs", x, x2)
        _close(got, PR.obs_features(x), f"features of observations {tuple(x.shape)}")


@check
@_quiet
def check_macro_f1(fn) -> None:
    """macro_f1(pred, true, classes=(1, 2, 3, 4)) -> mean F1 over the direction classes present."""
    rng = np.random.default_rng(0)
    for n in (50, 400):
        true = rng.choice(5, n, p=[0.6, 0.1, 0.1, 0.1, 0.1])
        pred = np.where(rng.random(n) < 0.6, true, rng.integers(0, 5, n))
        _close(float(fn(pred.copy(), true.copy())), PR.macro_f1(pred, true), f"macro-F1 on {n} rows", atol=1e-9)
    true = np.array([0, 0, 1, 1, 2, 0])
    pred = np.array([0, 1, 1, 0, 2, 0])
    _close(float(fn(pred, true)), PR.macro_f1(pred, true), "macro-F1 with classes 3 and 4 absent", atol=1e-9)


@check
@_quiet
def check_class_direction(fn) -> None:
    """class_direction(weight [5, C], cls) -> unit [C]: row cls minus the mean row, normalised."""
    g = torch.Generator().manual_seed(0)
    for c in (8, 16):
        w = torch.randn(5, c, generator=g) + 2.0
        for cls in (1, 4):
            w2 = w.clone()
            got = fn(w2, cls)
            assert_unchanged("weight", w, w2)
            _close(got, PR.class_direction(w, cls), f"direction of class {cls} (C={c})")


def _acts(g, b=4, c=6, h=5):
    return torch.randn(b, c, h, h, generator=g)


@check
@_quiet
def check_square_edit_hook(fn) -> None:
    """square_edit_hook(vectors [B, C], squares [B, 2]) -> hook adding vectors[b] at (row, col) of row b."""
    g = torch.Generator().manual_seed(0)
    for b in (4, 6):
        act = _acts(g, b)
        vec = torch.randn(b, 6, generator=g)
        sq = np.stack([np.arange(b) % 5, (np.arange(b) * 2 + 1) % 5], 1)
        sq[0] = (0, 3)
        a2 = act.clone()
        got = fn(vec.clone(), sq.copy())(a2, None)
        assert_unchanged("act (the hook must return a new tensor)", act, a2)
        _close(got, IV.square_edit_hook(vec, sq)(act, None), f"edited activations (B={b})")


@check
@_quiet
def check_projection_hook(fn) -> None:
    """projection_hook(basis [k, C]) -> hook removing span(basis) from every square's C-vector."""
    g = torch.Generator().manual_seed(0)
    for k in (1, 3):
        act = _acts(g, 5, 8)
        basis = torch.randn(k, 8, generator=g) * 3
        a2 = act.clone()
        got = fn(basis.clone())(a2, None)
        assert_unchanged("act (the hook must return a new tensor)", act, a2)
        _close(got, IV.projection_hook(basis)(act, None), f"projected activations (k={k})", atol=1e-4)


CHECKS = {"solve": check_solve, "reset_state": check_reset_state, "discounted_returns": check_discounted_returns,
          "pacing": check_pacing, "window_labels": check_window_labels, "obs_features": check_obs_features,
          "macro_f1": check_macro_f1, "class_direction": check_class_direction,
          "square_edit_hook": check_square_edit_hook, "projection_hook": check_projection_hook}


# ------------------------------------------------------------------ plausible wrong answers
def _solve_dfs(level):
    """Depth-first: finds a solution, usually not the shortest."""
    walls, targets = level.walls, frozenset(level.targets)
    start = (level.agent, tuple(sorted(level.boxes)))
    stack, seen = [(start, ())], {start}
    while stack:
        (agent, boxes), path = stack.pop()
        if set(boxes) == targets:
            return path
        for a in range(4):
            nr, nc = agent[0] + MOVES[a][0], agent[1] + MOVES[a][1]
            if walls[nr, nc]:
                continue
            nb = boxes
            if (nr, nc) in boxes:
                br, bc = nr + MOVES[a][0], nc + MOVES[a][1]
                if walls[br, bc] or (br, bc) in boxes:
                    continue
                nb = tuple(sorted((br, bc) if x == (nr, nc) else x for x in boxes))
            nxt = ((nr, nc), nb)
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + (a,)))
    return None


def _solve_empty_when_stuck(level):
    m = solve(level)
    return () if m is None else m


def _reset_inverted(state, starts):
    return tuple(s * starts.view(-1, *([1] * (s.ndim - 1))) for s in state) if state else state


def _reset_in_place(state, starts):
    for s in state:
        s[starts.bool()] = 0
    return state


def _reset_h_only(state, starts):
    if not state:
        return state
    keep = (1 - starts).view(-1, *([1] * (state[0].ndim - 1)))
    return (state[0] * keep, *state[1:])


def _returns_next_step_only(rewards, mask, gamma):
    return D.discounted_returns(rewards, mask, gamma) - rewards   # G_t without r_t


def _returns_forward(rewards, mask, gamma):
    ret, running = torch.zeros_like(rewards), torch.zeros(rewards.shape[1])
    for t in range(rewards.shape[0]):
        running = rewards[t] + gamma * running * mask[t]
        ret[t] = running
    return ret


def _pacing_counts_padding(actions, first=5):
    a = np.asarray(actions)[:, :first]
    out = P.pacing(np.where(a < 0, 4, a), first)
    return out


def _pacing_repeats(actions, first=5):
    a = np.asarray(actions)[:, :first]
    valid = a >= 0
    noop = ((a == 4) & valid).sum(1)
    rep = ((a[:, 1:] == a[:, :-1]) & valid[:, 1:] & (a[:, 1:] < 4)).sum(1)
    n = np.maximum(valid.sum(1), 1)
    return {"noop": noop / n, "back_and_forth": rep / n, "pacing": (noop + rep) / n}


def _labels_latest(events, horizon):
    T = events.shape[1]
    lab = np.zeros_like(events)
    for t in range(T):
        for s in range(t, min(T, t + horizon)):
            hit = events[:, s] > 0
            lab[:, t][hit] = events[:, s][hit]
    return lab


def _labels_off_by_one(events, horizon):
    return PR.window_labels(events, horizon + 1)


def _obs_zero_pad(obs):
    lead = obs.shape[:-3]
    x = torch.nn.functional.pad(obs.reshape(-1, *obs.shape[-3:]).float(), (1, 1, 1, 1))
    p = torch.nn.functional.unfold(x, 3).reshape(x.shape[0], -1, obs.shape[-2], obs.shape[-1])
    return p.reshape(*lead, p.shape[1], obs.shape[-2], obs.shape[-1])


def _obs_centre_only(obs):
    return obs.repeat_interleave(9, dim=-3)


def _f1_with_none(pred, true, classes=(1, 2, 3, 4)):
    return PR.macro_f1(pred, true, classes=(0, 1, 2, 3, 4))


def _f1_accuracy(pred, true, classes=(1, 2, 3, 4)):
    pred, true = np.asarray(pred), np.asarray(true)
    sel = true > 0
    return float((pred[sel] == true[sel]).mean())


def _direction_uncentred(weight, cls):
    return weight[cls] / weight[cls].norm()


def _direction_unnormalised(weight, cls):
    return weight[cls] - weight.mean(0)


def _edit_everywhere(vectors, squares):
    return lambda act, hook: act + vectors[:, :, None, None]


def _edit_swapped(vectors, squares):
    return IV.square_edit_hook(vectors, np.asarray(squares)[:, ::-1].copy())


def _edit_in_place(vectors, squares):
    def hook(act, hook):
        new = IV.square_edit_hook(vectors, squares)(act, hook)
        act.copy_(new)
        return act
    return hook


def _project_raw_basis(basis):
    q = basis.T.float()   # not orthonormalised

    def hook(act, hook):
        coef = torch.einsum("bchw,ck->bkhw", act, q)
        return act - torch.einsum("bkhw,ck->bchw", coef, q)
    return hook


def _project_normalised_rows(basis):
    q = (basis / basis.norm(dim=1, keepdim=True)).T   # unit rows, still not orthogonal

    def hook(act, hook):
        coef = torch.einsum("bchw,ck->bkhw", act, q)
        return act - torch.einsum("bkhw,ck->bchw", coef, q)
    return hook


WRONG_ANSWERS = {
    "solve": [_solve_dfs, _solve_empty_when_stuck],
    "reset_state": [_reset_inverted, _reset_in_place, _reset_h_only],
    "discounted_returns": [_returns_next_step_only, _returns_forward],
    "pacing": [_pacing_counts_padding, _pacing_repeats],
    "window_labels": [_labels_latest, _labels_off_by_one],
    "obs_features": [_obs_zero_pad, _obs_centre_only],
    "macro_f1": [_f1_with_none, _f1_accuracy],
    "class_direction": [_direction_uncentred, _direction_unnormalised],
    "square_edit_hook": [_edit_everywhere, _edit_swapped, _edit_in_place],
    "projection_hook": [_project_raw_basis, _project_normalised_rows],
}
