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
from utils.envs.sokoban import MOVES, Level, LevelBank, Sokoban, replay, solve
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


def _solved_already() -> Level:
    walls = np.ones((6, 6), bool)
    walls[1:5, 1:5] = False
    return Level(walls, ((2, 2),), ((2, 2),), (3, 3))   # the box already sits on its target


def _same_array(before, after, what: str) -> None:
    eq = torch.equal(before, after) if isinstance(before, Tensor) else np.array_equal(before, after)
    if not eq:
        raise ExerciseFailed(f"you wrote into the caller's {what} in place: work on a copy")


@check
@_quiet
def check_solve(fn) -> None:
    """solve(level) -> an optimal tuple of moves (0 up, 1 down, 2 left, 3 right), or None if unsolvable."""
    bank = LevelBank(4, "test", seed=11, size=6, n_boxes=1, min_moves=5)
    bank2 = LevelBank(2, "test", seed=12, size=7, n_boxes=2, min_moves=6)
    for i, lv in enumerate([*bank.levels, *bank2.levels]):
        walls0 = lv.walls.copy()
        got = fn(lv)
        _same_array(walls0, lv.walls, "level.walls")
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
    done = fn(_solved_already())
    if done is None or len(tuple(done)) != 0:
        raise ExerciseFailed(f"every box already sits on a target: the optimal solution is the empty tuple (), got "
                             f"{done}; test the START state before the first move, not only the states you reach")


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
        st = starts.clone()
        got = fn(state, st)
        for k in range(2):
            assert_unchanged(f"state[{k}]", copy[k], state[k])
        assert_unchanged("starts", starts, st)
        want = reset_state(copy, starts)
        if not isinstance(got, tuple) or len(got) != 2:
            raise ExerciseFailed("return a tuple (h, c) like the state you were given")
        for k, name in enumerate(("h", "c")):
            _close(got[k], want[k], f"{name} after the reset")
        # PPO backpropagates through the unrolled LSTM: the kept rows must pass gradients on, the reset ones not.
        leaves = tuple(s.clone().requires_grad_(True) for s in copy)
        out = fn(leaves, starts.clone())
        if not all(isinstance(o, Tensor) and o.requires_grad for o in out):
            raise ExerciseFailed("the reset state has no gradient: backpropagation through time stops here (no "
                                 ".detach(), .data or torch.no_grad in reset_state)")
        grads = torch.autograd.grad(sum(o.sum() for o in out), leaves, allow_unused=True)
        keep = (1 - starts).view(-1, 1, 1, 1, 1).expand_as(copy[0])
        for k, gk in enumerate(grads):
            if gk is None or not torch.allclose(gk, keep):
                raise ExerciseFailed(f"state[{k}]'s gradient is wrong: 1 on the rows that continue, 0 on the rows that "
                                     "restart (multiply by 1 - starts, or torch.where, out of place)")
    if fn((), torch.ones(3)) != ():
        raise ExerciseFailed("a feed-forward agent's state is the empty tuple: return it unchanged")


@check
@_quiet
def check_discounted_returns(fn) -> None:
    """discounted_returns(rewards [T, n], mask [T, n], gamma) -> [T, n]."""
    g = torch.Generator().manual_seed(0)
    # As many environments as steps first: time on the wrong axis (rewards[:, t]) does not crash there.
    for gamma, lengths in ((0.8, [5, 2, 4, 1, 3]), (0.9, [7, 3, 1, 5]), (0.5, [7, 3, 1, 5])):
        T, n = max(lengths), len(lengths)
        lengths = torch.tensor(lengths)
        mask = (torch.arange(T).view(-1, 1) < lengths.view(1, -1)).float()
        rewards = torch.randn(T, n, generator=g) * mask
        r2, m2 = rewards.clone(), mask.clone()
        got = fn(r2, m2, gamma)
        assert_unchanged("rewards", rewards, r2)
        assert_unchanged("mask", mask, m2)
        want = D.discounted_returns(rewards, mask, gamma)
        if T == n and isinstance(got, Tensor) and got.shape == want.shape and \
                torch.allclose(got.double(), D.discounted_returns(rewards.T, mask.T, gamma).T.double(), atol=1e-5):
            raise ExerciseFailed("you accumulated along the environments axis: rewards are [T, n], time is dim 0 "
                                 "(rewards[t], not rewards[:, t])")
        if isinstance(got, Tensor) and got.shape == want.shape and not torch.allclose(got.double(), want.double(),
                                                                                        atol=1e-5):
            if torch.allclose(got.double(), (want - rewards).double(), atol=1e-5):
                raise ExerciseFailed("G_t starts with the reward of step t itself: G_t = r_t + gamma * G_{t+1}")
            fwd, run = torch.zeros_like(rewards), torch.zeros(n)
            for t in range(T):
                run = rewards[t] + gamma * run * mask[t]
                fwd[t] = run
            if torch.allclose(got.double(), fwd.double(), atol=1e-5):
                raise ExerciseFailed("you accumulated forwards in time: G_t depends on the FUTURE rewards, loop t "
                                     "from T - 1 down to 0")
        _close(got, want, f"returns with gamma={gamma}, T={T}, n={n}")


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
    acts[4, :] = -1            # an episode with no counted step: every fraction is 0, not NaN
    for first in (5, 3):
        a2 = acts.copy()
        got = fn(a2, first)
        if not np.array_equal(a2, acts):
            raise ExerciseFailed("you wrote into the caller's actions: work on a copy")
        want = P.pacing(acts, first)
        if set(got) != set(want):
            raise ExerciseFailed(f"return a dict with keys {sorted(want)}, got {sorted(got)}")
        for k in want:
            if not np.isfinite(np.asarray(got[k], dtype=float)).all():
                raise ExerciseFailed(f"{k}: NaN for episode 4, which has no counted step; divide by "
                                     "max(number of counted steps, 1)")
            _close(got[k], want[k], f"{k} over the first {first} steps")


@check
@_quiet
def check_window_labels(fn) -> None:
    """window_labels(events [n, T, H, W], horizon) -> the earliest event in steps t .. t+horizon-1."""
    rng = np.random.default_rng(0)
    ev = rng.integers(1, 5, (3, 12, 4, 5)) * (rng.random((3, 12, 4, 5)) < 0.3)
    for horizon in (1, 3, 6, 15):      # 15 > T: the window is cut at the episode's end, never wrapped
        e2 = ev.copy()
        got = fn(e2, horizon)
        if not np.array_equal(e2, ev):
            raise ExerciseFailed("you wrote into the caller's events: work on a copy")
        want = PR.window_labels(ev, horizon)
        g = np.asarray(got)
        if g.shape == want.shape and not np.array_equal(g, want) and np.array_equal(g[:, : 12 - horizon + 1],
                                                                                    want[:, : 12 - horizon + 1]):
            raise ExerciseFailed(f"horizon {horizon}: the last steps differ: the window t .. t+horizon-1 is cut at "
                                 "T (np.roll wraps around to the episode's start)")
        if g.shape == want.shape and not np.array_equal(g, want):
            T = ev.shape[1]
            latest = np.zeros_like(ev)
            for t in range(T):
                for s_ in range(t, min(T, t + horizon)):
                    latest[:, t] = np.where(ev[:, s_] > 0, ev[:, s_], latest[:, t])
            nxt = np.concatenate([ev[:, 1:], np.zeros_like(ev[:, :1])], 1)
            for alt, msg in ((latest, "you kept the LAST event of the window: the EARLIEST one wins (walk the window "
                                      "from its far end back to t, overwriting)"),
                             (PR.window_labels(ev, horizon + 1), f"the window has horizon = {horizon} step(s), t .. "
                                                                 "t+horizon-1, not horizon + 1"),
                             (PR.window_labels(nxt, horizon), "the window starts at step t itself, not at t + 1")):
                if np.array_equal(g, alt):
                    raise ExerciseFailed(f"horizon {horizon}: {msg}")
        _close(g, want, f"labels with horizon {horizon}", atol=0)


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
        try:
            got = fn(x2)
        except (RuntimeError, ValueError, IndexError) as e:
            if x.ndim == 5:
                raise ExerciseFailed(f"observations {tuple(x.shape)} (time, envs, planes, H, W) raised "
                                     f"{type(e).__name__}: {e}; flatten the leading dims first "
                                     "(obs.reshape(-1, *obs.shape[-3:])) and restore them at the end") from None
            raise
        assert_unchanged("obs", x, x2)
        want = PR.obs_features(x)
        if isinstance(got, Tensor) and got.shape == want.shape and not torch.allclose(got.float(), want):
            # where a neighbour falls outside the board: plane 0 of the features of an all-zero board
            out_of_board = PR.obs_features(torch.zeros(1, 5, 6, 6))[0, :9].bool()      # [9, H, W]
            diff = (got.float() - want).abs().reshape(-1, 5, 9, 6, 6) > 1e-6
            if not (diff & ~out_of_board).any():
                if diff[:, 0].any():
                    raise ExerciseFailed("the wall plane (plane 0) is wrong outside the board: squares beyond the "
                                         "edge read as wall, plane 0 = 1 there (F.pad pads with 0)")
                raise ExerciseFailed("outside the board only plane 0 (wall) is 1: the other planes stay 0 (pad with "
                                     "0, then set the wall plane of the border to 1)")
        _close(got, want, f"features of observations {tuple(x.shape)} (plane-major, then the 9 offsets)")


@check
@_quiet
def check_macro_f1(fn) -> None:
    """macro_f1(pred, true, classes=(1, 2, 3, 4)) -> mean F1 over the direction classes present."""
    rng = np.random.default_rng(0)
    for n in (50, 400):
        true = rng.choice(5, n, p=[0.6, 0.1, 0.1, 0.1, 0.1])
        pred = np.where(rng.random(n) < 0.6, true, rng.integers(0, 5, n))
        got = float(fn(pred.copy(), true.copy()))
        if abs(got - PR.macro_f1(pred, true)) > 1e-9:
            if abs(got - PR.macro_f1(pred, true, classes=(0, 1, 2, 3, 4))) < 1e-9:
                raise ExerciseFailed("class 0 ('none') counted: average over `classes` only (default (1, 2, 3, 4)); "
                                     "the frequent 'none' would flatter the score")
            if abs(got - float((pred[true > 0] == true[true > 0]).mean())) < 1e-9 or abs(got - (pred == true).mean()) < 1e-9:
                raise ExerciseFailed("that is an accuracy: compute F1 = 2 TP / (2 TP + FP + FN) per class, then "
                                     "average over the classes")
        _close(got, PR.macro_f1(pred, true), f"macro-F1 on {n} rows", atol=1e-9)
    true = np.array([0, 0, 1, 1, 2, 0])
    pred = np.array([0, 1, 1, 0, 2, 0])
    _close(float(fn(pred, true)), PR.macro_f1(pred, true), "macro-F1 with classes 3 and 4 absent", atol=1e-9)
    # class 3 predicted but never true: its F1 is 0 and it counts (a false positive is a mistake)
    true = np.array([0, 1, 1, 2, 2, 0, 4])
    pred = np.array([3, 1, 1, 2, 3, 0, 4])
    p2, t2 = pred.copy(), true.copy()
    got = float(fn(p2, t2))
    _same_array(pred, p2, "pred")
    _same_array(true, t2, "true")
    want = PR.macro_f1(pred, true)
    if abs(got - want) > 1e-9 and abs(got - PR.macro_f1(pred, true, classes=(1, 2, 4))) < 1e-9:
        raise ExerciseFailed("class 3 is predicted but never true: it is not skipped (only classes neither present "
                             "nor predicted are), its F1 is 0")
    _close(got, want, "macro-F1 with class 3 predicted but absent from the truth", atol=1e-9)
    for classes in ((0, 1, 2), (2, 4)):
        got = float(fn(pred.copy(), true.copy(), classes=classes))
        if abs(got - PR.macro_f1(pred, true, classes=classes)) > 1e-9:
            raise ExerciseFailed(f"classes={classes}: average over the `classes` argument, not a fixed (1, 2, 3, 4)")


@check
@_quiet
def check_class_direction(fn) -> None:
    """class_direction(weight [5, C], cls) -> unit [C]: row cls minus the mean row, normalised."""
    g = torch.Generator().manual_seed(0)
    for c in (5, 8, 16):          # C = 5 first: a mean over the wrong axis has the right shape there
        w = torch.randn(5, c, generator=g) + 2.0
        for cls in (1, 4):
            w2 = w.clone()
            got = fn(w2, cls)
            assert_unchanged("weight", w, w2)
            want = PR.class_direction(w, cls)
            if c == 5 and isinstance(got, Tensor) and got.shape == want.shape:
                wrong = w[cls] - w.mean(1)
                if torch.allclose(got.double(), (wrong / wrong.norm()).double(), atol=1e-5):
                    raise ExerciseFailed("you averaged over the channels (dim 1): the mean ROW of the weight is "
                                         "weight.mean(0), a [C] vector")
            _close(got, want, f"direction of class {cls} (C={c})")


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
        a2, v2, s2 = act.clone(), vec.clone(), sq.copy()
        got = fn(v2, s2)(a2, None)
        assert_unchanged("act (the hook must return a new tensor)", act, a2)
        assert_unchanged("vectors", vec, v2)
        _same_array(sq, s2, "squares")
        want = IV.square_edit_hook(vec, sq)(act, None)
        if isinstance(got, Tensor) and got.shape == want.shape and not torch.allclose(got, want, atol=1e-5):
            changed = (got - act).abs().sum(1) > 1e-6          # [B, H, W]
            target = torch.zeros_like(changed)
            target[torch.arange(b), torch.as_tensor(sq[:, 0]), torch.as_tensor(sq[:, 1])] = True
            if (changed & ~target).any():
                i = int((changed & ~target).nonzero()[0, 0])
                raise ExerciseFailed(f"row {i} changed at squares other than squares[{i}] = {tuple(int(v) for v in sq[i])} "
                                     "(row, col): "
                                     "each batch row gets ITS vector at ITS square only, index act[rows, :, r, c] "
                                     "with rows = arange(B)")
        _close(got, want, f"edited activations (B={b})")


@check
@_quiet
def check_projection_hook(fn) -> None:
    """projection_hook(basis [k, C]) -> hook removing span(basis) from every square's C-vector."""
    g = torch.Generator().manual_seed(0)
    for k in (1, 3):
        act = _acts(g, 5, 8)
        basis = torch.randn(k, 8, generator=g) * 3
        a2, b2 = act.clone(), basis.clone()
        hook = fn(b2)
        assert_unchanged("basis", basis, b2)
        got = hook(a2, None)
        assert_unchanged("act (the hook must return a new tensor)", act, a2)
        assert_unchanged("basis", basis, b2)
        if isinstance(got, Tensor) and got.shape == act.shape:
            left = torch.einsum("bchw,kc->bkhw", got.double(), basis.double()).abs().max()
            if left > 1e-3 * float(act.abs().max() * basis.abs().max()):
                raise ExerciseFailed(f"k={k}: the result still has a component along the basis (rows not orthogonal "
                                     "or not unit): orthonormalise first, Q = torch.linalg.qr(basis.T)[0], then "
                                     "subtract (act . Q) Q^T")
        _close(got, IV.projection_hook(basis)(act, None), f"projected activations (k={k})", atol=1e-4)
        again = hook(act.clone(), None)      # the same hook runs at every step of a rollout
        _close(again, IV.projection_hook(basis)(act, None), f"the same hook called a second time (k={k})", atol=1e-4)


CHECKS = {"solve": check_solve, "reset_state": check_reset_state, "discounted_returns": check_discounted_returns,
          "pacing": check_pacing, "window_labels": check_window_labels, "obs_features": check_obs_features,
          "macro_f1": check_macro_f1, "class_direction": check_class_direction,
          "square_edit_hook": check_square_edit_hook, "projection_hook": check_projection_hook}


# ------------------------------------------------------------------ the end-to-end exercises
@functools.lru_cache(maxsize=1)
def _small_play():
    """A random-init DRC(2, 2) played (sampled) on 16 two-box 7 x 7 rooms, top layer recorded."""
    from utils.models.drc import DRC

    bank = LevelBank(16, "test", seed=3, size=7, n_boxes=2, min_moves=6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        model = DRC((5, 7, 7), 5, 8, 2, 2, 32).eval()
    name = model.hook_name("h", 1, 1)
    p = P.play(model, bank, record=(name,), keep_obs=True, greedy=False, seed=5)
    return model, bank, p, name


@check
@_quiet
def check_plan_probe_by_distance(fn) -> None:
    """plan_probe_by_distance(p, acts, seed, epochs) -> (probe, {bin: {'f1', ...}}): the probe on
    rest-of-episode agent labels, scored on held-out levels by distance from the agent."""
    _, _, p, name = _small_play()
    acts = p.acts[name]
    for seed in (0, 1):
        a2 = acts.clone()
        got = fn(p, a2, seed=seed, epochs=25)
        assert_unchanged("acts", acts, a2)
        want_probe, want = PR.plan_probe_by_distance(p, acts, seed=seed, epochs=25)
        if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict)):
            raise ExerciseFailed("return (probe, table): the fitted SquareProbe and f1_by_distance's dict")
        probe, table = got
        if set(table) != set(want):
            raise ExerciseFailed(f"the table's bins should be {sorted(want)} (PLAN_BINS: the agent's square apart, "
                                 f"then by distance, and '1+' for every other square), got {sorted(table)}")
        if abs(float(probe.f1) - want_probe.f1) > 1e-6:
            raise ExerciseFailed(f"seed {seed}: the probe's held-out macro-F1 is {float(probe.f1):.4f}, the reference "
                                 f"{want_probe.f1:.4f}: label over the rest of the episode (horizon=None), fit on "
                                 "square_rows(acts, labels, p, with_distance=True) with the given seed and epochs")
        for k, v in want.items():
            if table[k]["n_rows"] != v["n_rows"]:
                raise ExerciseFailed(f"bin {k!r}: {table[k]['n_rows']} rows, the reference {v['n_rows']}: score only "
                                     "the probe's held-out rows (probe.test_rows), split by agent_distance")
            same = (np.isnan(table[k]["f1"]) and np.isnan(v["f1"])) or abs(table[k]["f1"] - v["f1"]) < 1e-6
            if not same:
                raise ExerciseFailed(f"bin {k!r}: macro-F1 {table[k]['f1']:.4f}, the reference {v['f1']:.4f}")


@check
@_quiet
def check_steer_path(fn) -> None:
    """steer_path(model, bank, directions, layer, scale, targets, start, length) -> first-step logits
    with the plan written on the route's squares away from the agent, at every tick."""
    model, bank, _, _ = _small_play()
    g = torch.Generator().manual_seed(4)
    rng = np.random.default_rng(4)
    dirs = torch.randn(4, model.channels, generator=g)
    for start, length, layer in ((1, 3, 1), (2, 4, 1), (1, 5, 0)):
        targets = rng.integers(1, 5, len(bank))
        targets[0] = 0                                   # no target: no edit on that level
        d2, t2 = dirs.clone(), targets.copy()
        got = fn(model, bank, d2, layer, 6.0, t2, start=start, length=length)
        assert_unchanged("directions", dirs, d2)
        _same_array(targets, t2, "targets")
        want = IV.steer_path(model, bank, dirs, layer, 6.0, targets, start=start, length=length)
        if isinstance(got, Tensor) and got.shape == want.shape and not torch.allclose(got[0], want[0], atol=1e-4):
            raise ExerciseFailed("level 0 has target 0 (no route): its hidden state must not be edited")
        _close(got, want, f"first-step logits (start={start}, length={length}, layer={layer})", atol=1e-4)


CHECKS.update({"plan_probe_by_distance": check_plan_probe_by_distance, "steer_path": check_steer_path})


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


def _solve_start_not_checked(level):
    """Breadth-first, but tests for the goal only after a move: a solved start costs a step."""
    from collections import deque
    walls, targets = level.walls, set(level.targets)
    start = (tuple(level.agent), tuple(sorted(level.boxes)))
    parent, queue = {start: None}, deque([start])
    while queue:
        state = queue.popleft()
        (r, c), boxes = state
        for a in range(4):
            dr, dc = int(MOVES[a][0]), int(MOVES[a][1])
            nxt_agent = (r + dr, c + dc)
            if walls[nxt_agent]:
                continue
            new_boxes = boxes
            if nxt_agent in boxes:
                behind = (r + 2 * dr, c + 2 * dc)
                if walls[behind] or behind in boxes:
                    continue
                new_boxes = tuple(sorted(behind if b == nxt_agent else b for b in boxes))
            nxt = (nxt_agent, new_boxes)
            if nxt in parent:
                continue
            parent[nxt] = (state, a)
            if set(new_boxes) == targets:
                moves = []
                while parent[nxt] is not None:
                    nxt, a_ = parent[nxt]
                    moves.append(a_)
                return tuple(reversed(moves))
            queue.append(nxt)
    return None


def _reset_detached(state, starts):
    if not state:
        return state
    keep = 1.0 - starts.float()
    return tuple(s.detach() * keep.view(-1, *([1] * (s.ndim - 1))) for s in state)   # cuts BPTT


def _returns_time_on_axis_1(rewards, mask, gamma):
    ret, running = torch.zeros_like(rewards), torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running * mask[:, t]
        ret[:, t] = running
    return ret


def _returns_accumulate_in_rewards(rewards, mask, gamma):
    for t in reversed(range(rewards.shape[0] - 1)):
        rewards[t] += gamma * rewards[t + 1] * mask[t]      # the caller's rewards become returns
    return rewards.clone()


def _pacing_nan_empty(actions, first=5):
    out = P.pacing(actions, first)
    a = np.asarray(actions)[:, :first]
    n = (a >= 0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {k: np.where(n > 0, v, np.nan) for k, v in out.items()}   # divides by 0 counted steps


def _pacing_marks_padding_in_place(actions, first=5):
    a = np.asarray(actions)[:, :first]          # a view of the caller's array
    valid = a >= 0
    a[~valid] = 4                               # "padding is a no-op"
    noop = ((a == 4) & valid).sum(1)
    out = P.pacing(np.where(valid, a, -1), first)
    n = np.maximum(valid.sum(1), 1)
    return {"noop": noop / n, "back_and_forth": out["back_and_forth"], "pacing": noop / n + out["back_and_forth"]}


def _labels_rolled_window(events, horizon):
    lab = np.zeros_like(events)
    for k in reversed(range(horizon)):
        e = np.roll(events, -k, axis=1)         # wraps past T to the episode's start
        lab = np.where(e > 0, e, lab)
    return lab


def _labels_from_next_step(events, horizon):
    shifted = np.concatenate([events[:, 1:], np.zeros_like(events[:, :1])], 1)
    return PR.window_labels(shifted, horizon)


def _obs_pad_all_planes(obs):
    lead = obs.shape[:-3]
    x = torch.nn.functional.pad(obs.reshape(-1, *obs.shape[-3:]).float(), (1, 1, 1, 1), value=1.0)
    p = torch.nn.functional.unfold(x, 3).reshape(x.shape[0], -1, obs.shape[-2], obs.shape[-1])
    return p.reshape(*lead, p.shape[1], obs.shape[-2], obs.shape[-1])


def _obs_batch_only(obs):
    x = torch.nn.functional.pad(obs.float(), (1, 1, 1, 1))     # assumes [B, 5, H, W]
    x[:, 0, 0, :] = x[:, 0, -1, :] = 1
    x[:, 0, :, 0] = x[:, 0, :, -1] = 1
    return torch.nn.functional.unfold(x, 3).reshape(obs.shape[0], -1, obs.shape[-2], obs.shape[-1])


def _f1_fixed_classes(pred, true, classes=(1, 2, 3, 4)):
    return PR.macro_f1(pred, true)


def _f1_skips_classes_absent_from_truth(pred, true, classes=(1, 2, 3, 4)):
    present = tuple(c for c in classes if (np.asarray(true) == c).any())
    return PR.macro_f1(pred, true, classes=present) if present else 0.0


def _direction_mean_over_channels(weight, cls):
    w = weight[cls] - weight.mean(1)
    return w / w.norm()


def _direction_in_place(weight, cls):
    w = weight[cls]
    w -= weight.mean(0)                          # a view: the probe's weight changes
    return w / w.norm()


def _edit_every_row_at_every_square(vectors, squares):
    r = torch.as_tensor(np.asarray(squares)[:, 0])
    c = torch.as_tensor(np.asarray(squares)[:, 1])

    def hook(act, hook):
        act = act.clone()
        act[:, :, r, c] += vectors.T            # [B, C, B]: each row gets every row's vector
        return act
    return hook


def _project_normalises_basis_in_place(basis):
    basis /= basis.norm(dim=1, keepdim=True)
    return IV.projection_hook(basis)


def _project_sequential(basis):
    def hook(act, hook):
        out = act.clone()
        for b in basis:                          # one row at a time: not a projection when rows overlap
            u = b / b.norm()
            out = out - torch.einsum("bchw,c->bhw", out, u)[:, None] * u[None, :, None, None]
        return out
    return hook


def _probe_horizon_4(p, acts, target="agent", seed=0, epochs=150):
    labels = PR.plan_labels(p, 4)[target]                 # a short window, not the rest of the episode
    feats, y, groups, dist = PR.square_rows(acts, labels, p, with_distance=True)
    probe = PR.fit_square_probe(feats, y, groups, seed=seed, epochs=epochs)
    return probe, PR.f1_by_distance(probe, feats, y, groups, dist, bins=PR.PLAN_BINS, seed=seed)


def _probe_scored_on_all_rows(p, acts, target="agent", seed=0, epochs=150):
    labels = PR.plan_labels(p, None)[target]
    feats, y, groups, dist = PR.square_rows(acts, labels, p, with_distance=True)
    probe = PR.fit_square_probe(feats, y, groups, seed=seed, epochs=epochs)
    probe.test_rows = np.arange(len(y))                   # training levels scored too
    return probe, PR.f1_by_distance(probe, feats, y, groups, dist, bins=PR.PLAN_BINS, seed=seed)


def _probe_agent_square_pooled(p, acts, target="agent", seed=0, epochs=150):
    labels = PR.plan_labels(p, None)[target]
    feats, y, groups, dist = PR.square_rows(acts, labels, p, with_distance=True)
    probe = PR.fit_square_probe(feats, y, groups, seed=seed, epochs=epochs)
    return probe, PR.f1_by_distance(probe, feats, y, groups, dist, bins=((0, 1), (2, 3), (4, None), (0, None)),
                                    seed=seed)


def _probe_box_labels(p, acts, target="agent", seed=0, epochs=150):
    return PR.plan_probe_by_distance(p, acts, "box", seed, epochs)


def _edit_delta(model, bank, directions, targets, squares_of, scale):
    env = Sokoban(len(bank), bank, auto_reset=False)
    obs = env.set_levels(np.arange(len(bank)))
    delta = torch.zeros(len(bank), model.channels, bank.size, bank.size)
    for i in range(len(bank)):
        for r, c in squares_of(env, i):
            delta[i, :, r, c] += directions[int(targets[i]) - 1] * scale
    return obs, delta


def _run_edit(model, obs, delta, names):
    with model.hooks(fwd_hooks=[(nm, lambda a, hook: a + delta) for nm in names]):
        return model.step(obs, model.initial_state(len(obs)))[0]


def _steer_includes_agent_square(model, bank, directions, layer, scale, targets, start=1, length=3, levels=None):
    def squares(env, i):
        sq = IV.path_squares(env.agent[i:i + 1], env.walls[i:i + 1], np.asarray(targets)[i:i + 1], start, length)[0]
        return [tuple(env.agent[i])] + sq if sq else []          # the agent's own square as well
    obs, delta = _edit_delta(model, bank, directions, targets, squares, scale)
    return _run_edit(model, obs, delta, [model.hook_name("h", layer, n) for n in range(model.ticks)])


def _steer_through_walls(model, bank, directions, layer, scale, targets, start=1, length=3, levels=None):
    def squares(env, i):
        t = int(targets[i])
        if not 1 <= t <= 4:
            return []
        dr, dc = MOVES[t - 1]
        out = []
        for k in range(start, length + 1):                      # walls skipped, but the route goes on past them
            r, c = int(env.agent[i, 0] + k * dr), int(env.agent[i, 1] + k * dc)
            if 0 <= r < bank.size and 0 <= c < bank.size and not env.walls[i, r, c]:
                out.append((r, c))
        return out
    obs, delta = _edit_delta(model, bank, directions, targets, squares, scale)
    return _run_edit(model, obs, delta, [model.hook_name("h", layer, n) for n in range(model.ticks)])


def _steer_last_tick_only(model, bank, directions, layer, scale, targets, start=1, length=3, levels=None):
    def squares(env, i):
        return IV.path_squares(env.agent[i:i + 1], env.walls[i:i + 1], np.asarray(targets)[i:i + 1], start, length)[0]
    obs, delta = _edit_delta(model, bank, directions, targets, squares, scale)
    return _run_edit(model, obs, delta, [model.hook_name("h", layer, model.ticks - 1)])


def _steer_first_square_only(model, bank, directions, layer, scale, targets, start=1, length=3, levels=None):
    return IV.steer_path(model, bank, directions, layer, scale, targets, start, start, levels)


def _steer_one_target_for_all(model, bank, directions, layer, scale, targets, start=1, length=3, levels=None):
    t = np.asarray(targets)
    same = np.where(t > 0, t[t > 0][0], 0)                  # every level steered towards the first target
    return IV.steer_path(model, bank, directions, layer, scale, same, start, length, levels)


WRONG_ANSWERS = {
    "solve": [_solve_dfs, _solve_empty_when_stuck, _solve_start_not_checked],
    "reset_state": [_reset_inverted, _reset_in_place, _reset_h_only, _reset_detached],
    "discounted_returns": [_returns_next_step_only, _returns_forward, _returns_time_on_axis_1,
                           _returns_accumulate_in_rewards],
    "pacing": [_pacing_counts_padding, _pacing_repeats, _pacing_nan_empty, _pacing_marks_padding_in_place],
    "window_labels": [_labels_latest, _labels_off_by_one, _labels_rolled_window, _labels_from_next_step],
    "obs_features": [_obs_zero_pad, _obs_centre_only, _obs_pad_all_planes, _obs_batch_only],
    "macro_f1": [_f1_with_none, _f1_accuracy, _f1_fixed_classes, _f1_skips_classes_absent_from_truth],
    "class_direction": [_direction_uncentred, _direction_unnormalised, _direction_mean_over_channels,
                        _direction_in_place],
    "square_edit_hook": [_edit_everywhere, _edit_swapped, _edit_in_place, _edit_every_row_at_every_square],
    "projection_hook": [_project_raw_basis, _project_normalised_rows, _project_normalises_basis_in_place,
                        _project_sequential],
    "plan_probe_by_distance": [_probe_horizon_4, _probe_scored_on_all_rows, _probe_agent_square_pooled,
                               _probe_box_labels],
    "steer_path": [_steer_includes_agent_square, _steer_through_walls, _steer_last_tick_only,
                   _steer_first_square_only, _steer_one_target_for_all],
}
