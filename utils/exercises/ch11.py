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
from utils.exercises import ExerciseFailed, assert_unchanged, check
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


def _same_array(name: str, before: np.ndarray, after: np.ndarray) -> None:
    if not np.array_equal(before, after):
        raise ExerciseFailed(f"your function wrote into the caller's `{name}` array (np.asarray does not copy; "
                             "in-place ops such as x += ... or x[mask] = ... then change the caller's data): "
                             "start from np.array(...) copies")


def _grad_flows(fn, shape: tuple, *args) -> None:
    """The notebook backpropagates through fn (gradient x input): the gradient must reach the logits."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(*shape, generator=g).requires_grad_(True)
    out = fn(logits, *args)
    if not isinstance(out, Tensor) or not out.requires_grad:
        raise ExerciseFailed("no gradient flows back to the logits (detach, .item(), numpy or torch.no_grad?): "
                             "the attribution methods backpropagate through this function")
    out.sum().backward()
    want = torch.autograd.grad(I.centred_logit(logits, *args).sum(), logits)[0]
    if logits.grad is None or not torch.allclose(logits.grad, want, atol=1e-6):
        raise ExerciseFailed("the gradient with respect to the logits is wrong: it should be one-hot(action) "
                             "minus 1 / n_actions in every row")


@check
@_quiet
def check_landing_column(fn) -> None:
    """landing_column(ball_x, ball_y, ball_dir) -> [n] column where a falling ball reaches row 9, -1 if rising."""
    # at the walls: a ball at column 0 moving down-left stays in column 0 for one step (clamped),
    # then moves right; a mirror reflection (-x) would put it in column 1 straight away
    x, y, d = np.array([0, 9, 0, 9, 1, 8, 4, 4]), np.array([8, 8, 5, 5, 8, 8, 9, 9]), np.array([3, 2, 3, 2, 3, 2, 2, 0])
    want = G.landing_column(x, y, d)
    got = np.asarray(fn(x.copy(), y.copy(), d.copy()))
    if got.shape == want.shape and not np.array_equal(got[6:], want[6:]):
        raise ExerciseFailed(f"a ball already in row 9 lands where it is if falling ({want[6]}) and is -1 if rising; "
                             f"got {got[6:].tolist()}: stop moving a ball once it reaches row 9, and return -1 "
                             "for rising balls (directions 0, 1)")
    if got.shape == want.shape and not np.array_equal(got[:4], want[:4]):
        raise ExerciseFailed(f"balls falling at the side walls (x = {x[:4].tolist()}, y = {y[:4].tolist()}, dir = "
                             f"{d[:4].tolist()}) should land in {want[:4].tolist()}, got {got[:4].tolist()}: at a wall "
                             "the column is CLAMPED to 0..9 and the direction flips (no mirror reflection)")
    _close(got, want, "landing column at the walls")
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y, d = rng.integers(0, 10, 40), rng.integers(0, 10, 40), rng.integers(0, 4, 40)
        args = (x.copy(), y.copy(), d.copy())
        got = fn(*args)
        for name, before, after in zip(("ball_x", "ball_y", "ball_dir"), (x, y, d), args):
            _same_array(name, before, after)
        _close(got, G.landing_column(x, y, d), "landing column")


@check
@_quiet
def check_move_ball(fn) -> None:
    """move_ball(state, dx) -> (moved state, ok mask): ball and trail shifted, only where both stay on the grid."""
    # rows where the ball can move but its trail cannot (and the reverse)
    st = _states(0)
    st["ball_x"][:4], st["last_x"][:4] = np.array([8, 1, 9, 0]), np.array([9, 0, 8, 1])
    for dx in (1, -1):
        got, ok = fn({k: v.copy() for k, v in st.items()}, dx)
        _, wok = G.move_ball(st, dx)
        if not np.array_equal(np.asarray(ok, bool), wok):
            raise ExerciseFailed(f"ok mask for dx={dx} with the ball at {st['ball_x'][:4].tolist()} and its trail at "
                                 f"{st['last_x'][:4].tolist()}: expected {wok[:4].tolist()}, got "
                                 f"{np.asarray(ok, bool)[:4].tolist()}: a row moves only where BOTH the ball and its "
                                 "trail stay in 0..9")
    for seed, dx in ((0, 2), (1, -3), (2, 1), (3, 7), (4, -7)):
        st = _states(seed)
        before = {k: v.copy() for k, v in st.items()}
        got, ok = fn(st, dx)
        _same_state(before, st)
        want, wok = G.move_ball(before, dx)
        _close(np.asarray(ok), wok, f"ok mask (dx={dx})")
        for k in ("ball_x", "last_x", "ball_y", "last_y", "pos", "ball_dir"):
            _close(np.asarray(got[k]), want[k], f"{k} after moving the ball by {dx}")
        if set(got) != set(before):
            raise ExerciseFailed(f"the moved state must keep every key of the input state {sorted(before)}, "
                                 f"got {sorted(got)}")
        shared = [k for k in before if np.shares_memory(np.asarray(got[k]), st[k])]
        if shared:
            raise ExerciseFailed(f"the returned state shares the arrays {shared} with the caller's state (dict(state) "
                                 "or state.copy() copies only the dict): copy every array, np.array(v, copy=True)")


@check
@_quiet
def check_centred_logit(fn) -> None:
    """centred_logit(logits [B, A], action [B]) -> [B] logit of the action minus the mean logit."""
    g = torch.Generator().manual_seed(0)
    for b_n, a_n in ((6, 6), (16, 3), (10, 5)):        # the first: a square batch, B == A
        logits = torch.randn(b_n, a_n, generator=g)
        act = torch.randint(0, a_n, (b_n,), generator=g)
        lg, ac = logits.clone(), act.clone()
        got = fn(lg, ac)
        assert_unchanged("logits", logits, lg)
        assert_unchanged("action", act, ac)
        want = I.centred_logit(logits, act)
        got_t = torch.as_tensor(got)
        if b_n == a_n and got_t.shape == want.shape and not torch.allclose(got_t.double(), want.double(), atol=1e-5):
            if torch.allclose(got_t.double(), (logits.gather(1, act.view(-1, 1)).squeeze(1)
                                               - logits.mean(0)).double(), atol=1e-5):
                raise ExerciseFailed("you subtracted the mean over the BATCH (dim 0): the centring is over the "
                                     "actions of each row, logits.mean(-1)")
        _close(got, want, f"centred logit ({b_n} rows, {a_n} actions)")
    _grad_flows(fn, (8, 4), torch.tensor([0, 1, 2, 3, 3, 2, 1, 0]))


@check
@_quiet
def check_gradient_x_input(fn) -> None:
    """gradient_x_input(net, obs [B, 400], action [B]) -> [B, 4, 10, 10]."""
    for seed in (0, 1):
        net, st = _net(seed), _states(seed)
        obs = G.frames(st)
        greedy = net(obs).argmax(-1)
        other = (greedy + 1 + torch.arange(len(greedy)) % 2) % 3        # never the greedy action
        for act, which in ((greedy, "greedy"), (other, "non-greedy")):
            o2, a2 = obs.clone(), act.clone()
            params = [q.detach().clone() for q in net.parameters()]
            got = fn(net, o2, a2)
            assert_unchanged("obs", obs, o2.detach())
            assert_unchanged("action", act, a2)
            if o2.requires_grad:
                raise ExerciseFailed("you switched on requires_grad of the caller's obs: take a copy first "
                                     "(obs.view(-1, 4, 10, 10).clone().requires_grad_(True))")
            if any(not torch.equal(q.detach(), p0) for q, p0 in zip(net.parameters(), params)):
                raise ExerciseFailed("the network's parameters changed: only backpropagate, do not step an optimiser")
            want = I.gradient_x_input(net, obs, act)
            if which == "non-greedy" and torch.as_tensor(got).shape == want.shape and torch.allclose(
                    torch.as_tensor(got).double(), I.gradient_x_input(net, obs, greedy).double(), atol=1e-5):
                raise ExerciseFailed("you attributed the network's own argmax action, not the `action` argument: "
                                     "pick the centred logit of action[b] in each row")
            got_t, x = torch.as_tensor(got), obs.view(-1, 4, 10, 10).clone().requires_grad_(True)
            raw = torch.autograd.grad(net(x).gather(1, act.view(-1, 1)).sum(), x)[0]
            cen = torch.autograd.grad(I.centred_logit(net(x), act).sum(), x)[0]
            if got_t.shape == want.shape and not torch.allclose(got_t.double(), want.double(), atol=1e-5):
                if torch.allclose(got_t.double(), cen.double(), atol=1e-5):
                    raise ExerciseFailed("you returned the gradient alone: multiply it by the input (x.grad * x)")
                if torch.allclose(got_t.double(), (raw * x).double(), atol=1e-5):
                    raise ExerciseFailed("you differentiated the raw logit of the action: use the CENTRED logit "
                                         "(logit[action] - mean logit), the policy's preference for the action")
            _close(got, want, f"gradient x input ({which} actions)", atol=1e-5)


@check
@_quiet
def check_integrated_gradients(fn) -> None:
    """integrated_gradients(net, obs, action, steps) -> [B, 4, 10, 10], midpoint rule from the empty grid."""
    for seed, steps in ((0, 8), (1, 16)):
        net, st = _net(seed), _states(seed)
        obs = G.frames(st)
        greedy = net(obs).argmax(-1)
        other = (greedy + 1 + torch.arange(len(greedy)) % 2) % 3        # never the greedy action
        for act, which in ((greedy, "greedy"), (other, "non-greedy")):
            o2, a2 = obs.clone(), act.clone()
            got = fn(net, o2, a2, steps=steps)
            assert_unchanged("obs", obs, o2.detach())
            assert_unchanged("action", act, a2)
            if o2.requires_grad:
                raise ExerciseFailed("you switched on requires_grad of the caller's obs: build fresh leaves")
            want = I.integrated_gradients(net, obs, act, steps=steps)
            got_t = torch.as_tensor(got)
            if got_t.shape == want.shape and not torch.allclose(got_t.double(), want.double(), atol=1e-4):
                if which == "non-greedy" and torch.allclose(
                        got_t.double(), I.integrated_gradients(net, obs, greedy, steps=steps).double(), atol=1e-4):
                    raise ExerciseFailed("you attributed the network's own argmax action, not the `action` argument")
                x = obs.view(-1, 4, 10, 10)
                lin = torch.zeros_like(x)
                for alpha in torch.linspace(0, 1, steps).tolist():
                    xi = (alpha * x).requires_grad_(True)
                    I.centred_logit(net(xi), act).sum().backward()
                    lin += xi.grad
                if torch.allclose(got_t.double(), (x * lin / steps).double(), atol=1e-4):
                    raise ExerciseFailed(f"you evaluated the gradient at torch.linspace(0, 1, {steps}) (both ends): "
                                         "the midpoint rule uses alpha = (k + 0.5) / steps, k = 0 .. steps - 1")
            _close(got, want, f"integrated gradients (steps={steps}, {which} actions)", atol=1e-4)


@check
@_quiet
def check_total_variation(fn) -> None:
    """total_variation(logits_a, logits_b) -> [B] half the L1 distance between the two softmax distributions."""
    g = torch.Generator().manual_seed(0)
    for n_b, n_a, scale in ((5, 5, 3.0), (20, 3, 2.0), (7, 4, 2.0), (6, 3, 60.0)):   # square; confident policies
        a, b = torch.randn(n_b, n_a, generator=g) * scale, torch.randn(n_b, n_a, generator=g) * scale
        b[0] = a[0]                                   # identical rows: distance 0
        a2, b2 = a.clone(), b.clone()
        got = fn(a2, b2)
        assert_unchanged("logits_a", a, a2)
        assert_unchanged("logits_b", b, b2)
        got_t = torch.as_tensor(got)
        if not torch.isfinite(got_t).all():
            raise ExerciseFailed(f"non-finite distances for logits up to {float(a.abs().max()):.0f} in size: exp() "
                                 "overflows; use torch.softmax, which subtracts the row maximum first")
        want = I.total_variation(a, b)
        if n_b == n_a and got_t.shape == want.shape and torch.allclose(got_t.double(), (0.5 * (
                torch.softmax(a, 0) - torch.softmax(b, 0)).abs().sum(-1)).double(), atol=1e-5):
            raise ExerciseFailed("you took the softmax over the batch (dim 0): each row is one distribution over "
                                 "actions, softmax(logits, dim=-1)")
        _close(got, want, f"total variation ({n_b} rows, {n_a} actions, logits of scale {scale})")


@check
@_quiet
def check_spearman_rows(fn) -> None:
    """spearman_rows(a, b) -> Spearman correlation along the last axis (works on [n] and [k, n])."""
    rng = np.random.default_rng(0)
    for k, n in ((5, 30), (6, 6)):                    # the second: square, [k, n] with k == n
        a, b = rng.normal(size=(k, n)), rng.normal(size=(k, n))
        b[0] = a[0] ** 3
        a2, b2 = a.copy(), b.copy()
        got = fn(a2, b2)
        _same_array("a", a, a2)
        _same_array("b", b, b2)
        got_a, pear = np.asarray(got, float), np.array([np.corrcoef(r, t)[0, 1] for r, t in zip(a, b)])
        if got_a.shape == pear.shape and np.allclose(got_a, pear, atol=1e-6):
            raise ExerciseFailed("you returned the Pearson correlation of the values: rank each row first")
        _close(got, I.spearman_rows(a, b), f"spearman over the rows of [{k}, {n}] arrays", atol=1e-6)
    _close(np.asarray(fn(a[1].copy(), np.exp(a[1]))), np.asarray(1.0), "spearman of a monotone transform", atol=1e-6)
    # ties: attributions and effects are often exactly 0, and a bootstrap resample repeats rows
    a = np.array([[0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 0.0], [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]])
    b = np.array([[0.5, 0.1, 0.2, 0.0, 0.7, 0.3, 0.9, 0.4], [4.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0]])
    got, want = np.asarray(fn(a.copy(), b.copy()), float), I.spearman_rows(a, b)
    if got.shape == want.shape and not np.allclose(got, want, atol=1e-6):
        raise ExerciseFailed(f"with tied values the correlations should be {np.round(want, 4).tolist()}, got "
                             f"{np.round(got, 4).tolist()}: tied entries must share their AVERAGE rank "
                             "(scipy.stats.rankdata); argsort of argsort breaks ties by position, so two "
                             "identical rows of pairs get a spurious positive correlation")


@check
@_quiet
def check_class_mean_subspace(fn) -> None:
    """class_mean_subspace(acts [n, d], labels [n]) -> orthonormal basis [d, k-1] of the centred class means."""
    g = torch.Generator().manual_seed(0)
    for k, ids in ((2, (0, 1)), (3, (0, 2, 5)), (4, (0, 1, 2, 3))):      # class ids need not be 0..k-1
        acts = torch.randn(80, 10, generator=g) + torch.randn(k, 10, generator=g).repeat(80 // k + 1, 1)[:80] * 2
        labels = np.asarray(ids)[np.tile(np.arange(k), 80 // k + 1)[:80]]
        a2, l2 = acts.clone(), labels.copy()
        q = torch.as_tensor(fn(a2, l2)).double()
        assert_unchanged("acts", acts, a2)
        _same_array("labels", labels, l2)
        if not torch.isfinite(q).all():
            raise ExerciseFailed(f"non-finite basis for class ids {list(ids)}: loop over the classes PRESENT "
                                 "(torch.unique(labels)), not range(k) (an absent class has an empty mean)")
        want = I.class_mean_subspace(acts, labels).double()
        if q.shape != want.shape:
            raise ExerciseFailed(f"{k} classes: expected a basis of shape {tuple(want.shape)}, got {tuple(q.shape)}")
        if not torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-4):
            raise ExerciseFailed("the basis is not orthonormal: orthonormalise the centred means (torch.linalg.qr)")
        _close(q @ q.T, want @ want.T, f"projection onto the span ({k} classes)", atol=1e-4)
    # conv activations [n, C, H, W], as the chapter passes them
    acts = torch.randn(30, 2, 3, 3, generator=g)
    labels = np.arange(30) % 3
    acts[labels == 1] += 1.5
    try:
        q = torch.as_tensor(fn(acts.clone(), labels.copy())).double()
    except (RuntimeError, ValueError, IndexError) as e:
        raise ExerciseFailed(f"conv activations [n, 2, 3, 3] raised {type(e).__name__} ({e}): flatten acts to "
                             "[n, d] first (acts.flatten(1))") from e
    want = I.class_mean_subspace(acts, labels).double()
    if q.shape != want.shape:
        raise ExerciseFailed(f"for conv activations [n, 2, 3, 3] expected a basis [18, 2] (flattened), got "
                             f"{tuple(q.shape)}: flatten acts to [n, d] first")
    _close(q @ q.T, want @ want.T, "projection onto the span of conv activations", atol=1e-4)


@check
@_quiet
def check_subspace_patch_hook(fn) -> None:
    """subspace_patch_hook(source, basis) -> hook(act, hook) replacing act's component in span(basis) by source's."""
    g = torch.Generator().manual_seed(0)
    for shape in ((6, 8), (6, 2, 3, 3)):
        d = int(np.prod(shape[1:]))
        act, src = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        q = I.random_subspace(d, 3, seed=1)
        a2, s2, q2 = act.clone(), src.clone(), q.clone()
        got = fn(s2, q2)(a2, None)
        if not torch.equal(a2, act):
            raise ExerciseFailed("your hook wrote into the activation in place: return a new tensor")
        assert_unchanged("source", src, s2)
        assert_unchanged("basis", q, q2)
        _close(got, I.subspace_patch_hook(src, q)(act, None), f"patched activation of shape {shape}")


@check
@_quiet
def check_object_attribution(fn) -> None:
    """object_attribution(attr [n, 4, 10, 10], state) -> {ball, paddle, bricks: [n]} summed |attribution| per object."""
    g = torch.Generator().manual_seed(0)
    for seed, n in ((0, 12), (3, 5)):
        st = _states(seed, n)
        before = {k: v.copy() for k, v in st.items()}
        attr = torch.randn(n, 4, 10, 10, generator=g)
        a2 = attr.clone()
        got = fn(a2, st)
        assert_unchanged("attr", attr, a2)
        _same_state(before, st)
        want = I.object_attribution(attr, st)
        if set(got) != set(want):
            raise ExerciseFailed(f"return a dict with keys {sorted(want)}, got {sorted(got)}")
        for k in want:
            signed = (attr * I.object_masks(st)[k]).flatten(1).sum(1)
            if torch.as_tensor(got[k]).shape == signed.shape and not torch.allclose(want[k], signed) and \
                    torch.allclose(torch.as_tensor(got[k]).double(), signed.double(), atol=1e-5):
                raise ExerciseFailed(f"the {k}'s attribution is the signed sum: sum the ABSOLUTE attribution "
                                     "(positive and negative cells both matter)")
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


def _land_in_place(x, y, d):
    x, y, d = np.asarray(x), np.asarray(y), np.asarray(d)        # no copy: the loop below edits the caller's arrays
    falling = np.isin(d, (2, 3))
    for _ in range(10):
        move = falling & (y < 9)
        nx = x + G.DX[d]
        side = move & ((nx < 0) | (nx > 9))
        d[side] = np.array([1, 0, 3, 2])[d[side]]
        x[move] = np.clip(nx, 0, 9)[move]
        y[move] += 1
    return np.where(falling, x, -1)


def _land_mirror(x, y, d):
    x, y, d = np.array(x), np.array(y), np.array(d)
    falling = np.isin(d, (2, 3))
    for _ in range(10):
        move = falling & (y < 9)
        nx = x + G.DX[d]
        side = move & ((nx < 0) | (nx > 9))
        d = np.where(side, np.array([1, 0, 3, 2])[d], d)
        x = np.where(move, np.where(nx < 0, -nx, np.where(nx > 9, 18 - nx, nx)), x)   # a mirror bounce
        y = np.where(move, y + 1, y)
    return np.where(falling, x, -1)


def _land_one_step_past(x, y, d):
    x, y, d = np.array(x), np.array(y), np.array(d)
    falling = np.isin(d, (2, 3))
    for _ in range(10):
        move = falling & (y <= 9)                                       # moves a ball already on row 9
        nx = x + G.DX[d]
        side = move & ((nx < 0) | (nx > 9))
        d = np.where(side, np.array([1, 0, 3, 2])[d], d)
        x = np.where(move, np.clip(nx, 0, 9), x)
        y = np.where(move, y + 1, y)
    return np.where(falling, x, -1)


def _move_ball_shallow_copy(state, dx):
    out = dict(state)                                                   # copies the dict, not the arrays
    ok = ((state["ball_x"] + dx >= 0) & (state["ball_x"] + dx <= 9)
          & (state["last_x"] + dx >= 0) & (state["last_x"] + dx <= 9))
    out["ball_x"] = np.where(ok, state["ball_x"] + dx, state["ball_x"])
    out["last_x"] = np.where(ok, state["last_x"] + dx, state["last_x"])
    return out, ok


def _move_ball_ok_on_ball(state, dx):
    out = {k: np.array(v, copy=True) for k, v in state.items()}
    ok = (out["ball_x"] + dx >= 0) & (out["ball_x"] + dx <= 9)          # the trail may leave the grid
    out["ball_x"] = np.where(ok, out["ball_x"] + dx, out["ball_x"])
    out["last_x"] = np.where(ok, np.clip(out["last_x"] + dx, 0, 9), out["last_x"])
    return out, ok


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


def _centred_in_place(logits, action):
    logits -= logits.mean(-1, keepdim=True)                             # the caller's logits are centred too
    return logits.gather(1, action.view(-1, 1)).squeeze(1)


def _centred_batch_mean(logits, action):
    return logits[torch.arange(len(action)), action] - logits.mean(0)   # mean over the batch


def _centred_detached(logits, action):
    lg = logits.detach().numpy()
    a = action.numpy()
    return torch.as_tensor(lg[np.arange(len(a)), a] - lg.mean(-1))


def _gxi_argmax_action(net, obs, action):
    x = obs.view(-1, 4, 10, 10).clone().requires_grad_(True)
    logits = net(x)
    I.centred_logit(logits, logits.argmax(-1)).sum().backward()        # the greedy action, not `action`
    return (x.grad * x).detach()


def _gxi_flags_obs(net, obs, action):
    obs.requires_grad_(True)                                            # the caller's tensor now tracks gradients
    x = obs.view(-1, 4, 10, 10)
    grad, = torch.autograd.grad(I.centred_logit(net(x), action).sum(), obs)
    return (grad.view_as(x) * x).detach()


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


def _ig_argmax_action(net, obs, action, steps=32):
    with torch.no_grad():
        greedy = net(obs.view(-1, 4, 10, 10)).argmax(-1)                # the greedy action, not `action`
    return I.integrated_gradients(net, obs, greedy, steps=steps)


def _ig_linspace(net, obs, action, steps=32):
    x = obs.view(-1, 4, 10, 10)
    total = torch.zeros_like(x)
    for alpha in torch.linspace(0, 1, steps):                           # both ends, not the midpoints
        xi = (alpha * x).requires_grad_(True)
        I.centred_logit(net(xi), action).sum().backward()
        total += xi.grad
    return x * total / steps


def _tv_manual_softmax(a, b):
    p, q = a.exp() / a.exp().sum(-1, keepdim=True), b.exp() / b.exp().sum(-1, keepdim=True)   # overflows
    return 0.5 * (p - q).abs().sum(-1)


def _tv_softmax_in_place(a, b):
    a.exp_()
    b.exp_()                                                            # the caller's logits become exp(logits)
    return 0.5 * (a / a.sum(-1, keepdim=True) - b / b.sum(-1, keepdim=True)).abs().sum(-1)


def _tv_softmax_dim0(a, b):
    return 0.5 * (torch.softmax(a, 0) - torch.softmax(b, 0)).abs().sum(-1)


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


def _spearman_ordinal_ties(a, b):
    ra = np.argsort(np.argsort(a, axis=-1), axis=-1).astype(float)    # ties broken by position
    rb = np.argsort(np.argsort(b, axis=-1), axis=-1).astype(float)
    return _spearman_pearson(ra, rb)


def _spearman_in_place(a, b):
    from scipy.stats import rankdata
    a -= a.mean(-1, keepdims=True)                                      # "centre first", in the caller's array
    return _spearman_pearson(rankdata(a, axis=-1), rankdata(b, axis=-1))


def _cms_range_classes(acts, labels):
    acts, labels = acts.flatten(1).double(), torch.as_tensor(labels)
    k = int(labels.max()) + 1                                           # assumes the ids are 0 .. k-1
    mu = acts.mean(0)
    diffs = torch.stack([acts[labels == c].mean(0) - mu for c in range(k)])
    return torch.linalg.qr(diffs.T)[0][:, : k - 1].float()


def _cms_centre_in_place(acts, labels):
    acts -= acts.mean(0)                                                # centres the caller's activations
    return I.class_mean_subspace(acts, labels)


def _cms_no_flatten(acts, labels):
    labels = torch.as_tensor(labels)
    classes = torch.unique(labels)
    mu = acts.mean(0)
    diffs = torch.stack([acts[labels == c].mean(0) - mu for c in classes])
    q, _ = torch.linalg.qr(diffs.reshape(len(classes), -1).T.double())
    return q[:, : len(classes) - 1].float().view(*acts.shape[1:], -1) if acts.ndim > 2 else q[:, : len(classes) - 1].float()


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


def _obj_abs_in_place(attr, state):
    attr.abs_()                                                         # the caller's attributions lose their sign
    return I.object_attribution(attr, state)


WRONG_ANSWERS = {
    "landing_column": [_land_no_bounce, _land_rising_too, _land_in_place, _land_mirror, _land_one_step_past],
    "move_ball": [_move_ball_only, _move_ball_clip, _move_ball_in_place, _move_ball_shallow_copy,
                  _move_ball_ok_on_ball],
    "centred_logit": [_centred_raw, _centred_logprob, _centred_in_place, _centred_batch_mean, _centred_detached],
    "gradient_x_input": [_gxi_grad_only, _gxi_raw_logit, _gxi_argmax_action, _gxi_flags_obs],
    "integrated_gradients": [_ig_no_input_scale, _ig_left_endpoint, _ig_argmax_action, _ig_linspace],
    "total_variation": [_tv_no_half, _tv_logits, _tv_manual_softmax, _tv_softmax_in_place, _tv_softmax_dim0],
    "spearman_rows": [_spearman_pearson, _spearman_argsort_once, _spearman_ordinal_ties, _spearman_in_place],
    "class_mean_subspace": [_cms_uncentred, _cms_not_orthonormal, _cms_range_classes, _cms_centre_in_place,
                            _cms_no_flatten],
    "subspace_patch_hook": [_sph_full_replace, _sph_add_source, _sph_in_place],
    "object_attribution": [_obj_signed, _obj_ball_without_trail, _obj_abs_in_place],
}
