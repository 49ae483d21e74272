"""Checks for chapter 05 (concepts in an AlphaZero-style agent). References live in
utils.alphazero (mcts, training, games, concepts).

Every check draws its inputs from a local generator (networks are built inside
`torch.random.fork_rng`), uses several cases including edge cases, checks that the caller's
arrays are not written into, and compares with the reference.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from utils.alphazero import concepts as R
from utils.alphazero import mcts as M
from utils.alphazero import training as T
from utils.alphazero.games import get_game, random_positions
from utils.alphazero.network import AZNet, layer_names
from utils.core import torch_threads
from utils.exercises import ExerciseFailed, check, global_rng_untouched


def _quiet(fn):
    """One thread, the global random state restored, gradients on."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(1), torch.random.fork_rng(devices=[]), torch.enable_grad():
            return fn(*args, **kwargs)
    return wrapper


def _net(game: str, seed: int) -> AZNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = AZNet(game=game, channels=8, n_blocks=2)
    return net.eval()


def _arr_close(got, want, what: str, atol: float = 1e-6) -> np.ndarray:
    try:
        g = np.asarray(got.detach() if isinstance(got, Tensor) else got, dtype=np.float64)
    except (TypeError, ValueError):
        raise ExerciseFailed(f"{what}: return an array, got {type(got).__name__}") from None
    w = np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        raise ExerciseFailed(f"{what}: expected shape {w.shape}, got {g.shape}")
    fin = np.isfinite(w)
    if not np.array_equal(np.isfinite(g), fin) or not np.allclose(g[fin], w[fin], atol=atol, rtol=1e-5):
        err = np.abs(np.where(fin, g, 0.0) - np.where(fin, w, 0.0)).max() if g.size else 0
        raise ExerciseFailed(f"{what}: values differ from the reference (max error {err:.4g}, or -inf/finite mismatch)")
    return g


def _unchanged(before, after, what: str) -> None:
    eq = torch.equal(before, after) if isinstance(before, Tensor) else np.array_equal(before, after)
    if not eq:
        raise ExerciseFailed(f"you wrote into the caller's {what} in place: work on a copy")


# ------------------------------------------------------------------ 1. PUCT
@check
@_quiet
def check_puct_scores(fn) -> None:
    """puct_scores(N, W, P, legal, c_puct) -> [..., A] with -inf on illegal moves."""
    rng = np.random.default_rng(0)
    cases = []
    for shape in ((5,), (4, 7), (3, 9)):
        N = rng.integers(0, 6, size=shape).astype(float)
        W = (rng.random(shape) * 2 - 1) * N
        P = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) if len(shape) > 1 else rng.dirichlet(np.ones(shape[-1]))
        legal = rng.random(shape) > 0.25
        legal[..., 0] = True
        cases.append((N, W, P, legal, 1.5))
    z = np.zeros((2, 4))
    cases.append((z, z.copy(), np.full((2, 4), 0.25), np.ones((2, 4), bool), 2.0))     # a fresh node
    for N, W, P, legal, c in cases:
        args = [N.copy(), W.copy(), P.copy(), legal.copy()]
        got = fn(*args, c)
        for a, b, what in zip((N, W, P, legal), args, ("N", "W", "P", "legal")):
            _unchanged(a, b, what)
        want = M.puct_scores(N, W, P, legal, c)
        g = np.asarray(got, dtype=np.float64)
        if g.shape == want.shape and np.isfinite(g[~legal]).any():
            raise ExerciseFailed("illegal moves must score -inf so argmax never picks them")
        if g.shape == want.shape and (N == 0).all() and np.allclose(g[legal], 0):
            raise ExerciseFailed("at a fresh node (all N = 0) the prior must still count: use sqrt(1 + sum_b N(s, b))")
        if g.shape == want.shape and not np.allclose(g[legal], want[legal], atol=1e-6):
            Q = np.divide(W, N, out=np.zeros_like(W, dtype=np.float64), where=N > 0)
            U = c * P * np.sqrt(1.0 + N.sum(-1, keepdims=True)) / (1.0 + N)
            named = [(W + U, "Q is the MEAN value W / N (0 where N = 0), not the value sum W"),
                     (Q + c * P * np.sqrt(N.sum(-1, keepdims=True)) / (1.0 + N),
                      "the exploration term uses sqrt(1 + sum_b N(s, b)), with the 1"),
                     (Q + U / c, f"multiply the exploration term by c_puct (here {c})"),
                     (Q + c * P * np.sqrt(1.0 + N.sum(-1, keepdims=True)) / np.maximum(N, 1),
                      "divide by 1 + N(s, a), not by N(s, a)")]
            for alt, msg in named:
                if np.allclose(g[legal], alt[legal], atol=1e-6):
                    raise ExerciseFailed(f"N shape {N.shape}, c_puct={c}: {msg}")
        _arr_close(got, want, f"N shape {N.shape}, c_puct={c}")


# ------------------------------------------------------------------ 2. backup
@check
@_quiet
def check_backup(fn) -> None:
    """backup(N, W, path, leaf_value) updates N and W in place along the path, alternating signs."""
    for path, v in (([(0, 2)], 1.0), ([(0, 1), (3, 0), (5, 2)], -1.0), ([(0, 0), (1, 1), (2, 2), (4, 1)], 0.5),
                    ([(0, 3), (2, 1)], 0.0)):
        N, W = np.zeros((6, 4)), np.zeros((6, 4))
        N[1, 1], W[1, 1] = 3, -1.0
        N2, W2 = N.copy(), W.copy()
        arg = list(path)
        out = fn(N, W, arg, v)
        if arg != list(path):
            raise ExerciseFailed("you changed the caller's path list (path.reverse()?): backup only updates N and "
                                 "W; walk reversed(path) instead")
        M.backup(N2, W2, list(path), v)
        if out is not None and not (isinstance(out, tuple) and len(out) == 2):
            raise ExerciseFailed("update N and W in place (return nothing)")
        if not np.array_equal(N, N2):
            raise ExerciseFailed(f"path {path}: every edge on the path gets exactly one more visit")
        if not np.allclose(W, W2):
            base = np.zeros_like(W)
            base[1, 1] = -1.0
            flipped = np.allclose(W - base, -(W2 - base))
            hint = " (the edge INTO the leaf belongs to the other player: it gets -leaf_value)" if flipped else ""
            raise ExerciseFailed(f"path {path}, leaf value {v}: W differs from the reference; negate the value at every "
                                 f"step up the path{hint}")


# ------------------------------------------------------------------ 3. Dirichlet noise
@check
@_quiet
def check_add_dirichlet_noise(fn) -> None:
    """add_dirichlet_noise(priors, legal, alpha, frac, rng) -> mixed priors, zero on illegal moves."""
    rng0 = np.random.default_rng(1)
    legal = rng0.random((400, 6)) > 0.3
    legal[:, 0] = True
    legal[:50] = True            # 50 rows with the same (all-legal) mask: their noise must still differ
    priors = np.where(legal, rng0.random((400, 6)), 0)
    priors /= priors.sum(1, keepdims=True)
    # Randomness: only the rng argument is used; same seed, same output; another seed, another output.
    outs = []
    for seed in (7, 7, 8):
        p, m = priors.copy(), legal.copy()
        outs.append(np.asarray(global_rng_untouched("add_dirichlet_noise",
                                                    lambda: fn(p, m, 0.3, 0.25, np.random.default_rng(seed))),
                               dtype=np.float64))
        _unchanged(priors, p, "priors")
        _unchanged(legal, m, "legal")
    if outs[0].shape == priors.shape and not np.allclose(outs[0], outs[1]):
        raise ExerciseFailed("two calls with generators seeded alike gave different noise: draw only from `rng` "
                             "(no np.random.* and no fresh default_rng())")
    if outs[0].shape == priors.shape and np.allclose(outs[0], outs[2]):
        raise ExerciseFailed("generators with different seeds gave the same noise: you ignore `rng` (a fixed "
                             "seed of your own?); draw the noise from the rng you were given")
    for alpha, frac in ((0.3, 0.25), (1.0, 0.5), (0.5, 0.0)):
        p, m = priors.copy(), legal.copy()
        got = np.asarray(fn(p, m, alpha, frac, np.random.default_rng(7)), dtype=np.float64)
        _unchanged(priors, p, "priors")
        _unchanged(legal, m, "legal")
        if got.shape != priors.shape:
            raise ExerciseFailed(f"expected shape {priors.shape}, got {got.shape}")
        if np.abs(got[~legal]).max() > 1e-12:
            raise ExerciseFailed("noise must go on legal moves only (illegal moves keep probability 0)")
        if not np.allclose(got.sum(1), 1, atol=1e-6):
            raise ExerciseFailed("each row must still sum to 1: mix (1 - frac) * priors + frac * noise")
        if frac == 0:
            if not np.allclose(got, priors):
                raise ExerciseFailed("with frac = 0 the priors must come back unchanged")
            continue
        noise = (got - (1 - frac) * priors) / frac
        if (noise < -1e-9).any():
            raise ExerciseFailed("the noise part must be non-negative: mix (1 - frac) * priors + frac * noise")
        if len(np.unique(noise[:50].round(9), axis=0)) < 50:
            raise ExerciseFailed("rows with the same legal moves got the same noise: draw a new Dirichlet sample "
                                 "for every row (one draw reused for the whole batch is not independent)")
        # Dirichlet(alpha) over k legal moves: each share has mean 1/k and variance (k - 1) / (k^2 (k alpha + 1))
        k = legal.sum(1)
        sel = k == 5
        share = noise[sel][legal[sel]].reshape(-1)
        var_want = (5 - 1) / (25 * (5 * alpha + 1))
        if abs(share.var() - var_want) > 0.35 * var_want:
            raise ExerciseFailed(f"alpha={alpha}: the noise's spread does not match Dirichlet(alpha) over the legal "
                                 f"moves (variance {share.var():.4f}, expected about {var_want:.4f})")


# ------------------------------------------------------------------ 4. the AlphaZero loss
@check
@_quiet
def check_az_loss(fn) -> None:
    """az_loss(logits, value, pi, z) -> scalar mean (z - v)^2 - sum pi log softmax(logits)."""
    g = torch.Generator().manual_seed(3)
    for n, A in ((6, 9), (32, 5), (1, 3)):
        logits = torch.randn(n, A, generator=g, requires_grad=True)
        value = torch.tanh(torch.randn(n, generator=g)).requires_grad_(True)
        pi = torch.softmax(torch.randn(n, A, generator=g) * 2, -1)
        pi[:, -1] = 0.0          # as in self-play: the search never visits illegal moves, exact zeros in pi
        pi = pi / pi.sum(-1, keepdim=True)
        z = torch.randint(-1, 2, (n,), generator=g).float()
        args = (logits.detach().clone().requires_grad_(True), value.detach().clone().requires_grad_(True),
                pi.clone(), z.clone())
        got = fn(*args)
        _unchanged(pi, args[2], "pi")
        _unchanged(z, args[3], "z")
        want = T.az_loss(logits, value, pi, z)
        if not isinstance(got, Tensor) or got.ndim != 0:
            raise ExerciseFailed("return a scalar tensor (the mean over the batch)")
        if not got.requires_grad:
            raise ExerciseFailed("the loss must keep gradients to logits and value (no .item() or numpy)")
        if abs(float(got.detach()) - float(want.detach())) > 1e-5:
            raise ExerciseFailed(f"batch {n}x{A}: expected {float(want):.5f}, got {float(got):.5f}: (z - v)^2 plus the "
                                 "cross-entropy of pi against log_softmax(logits), both averaged over the batch")
        got.backward()
        want.backward()
        if not torch.allclose(args[0].grad, logits.grad, atol=1e-5) or not torch.allclose(args[1].grad, value.grad, atol=1e-5):
            raise ExerciseFailed("gradients differ from the reference")


# ------------------------------------------------------------------ 5. visit policy
@check
@_quiet
def check_visit_policy(fn) -> None:
    """visit_policy(visits, temperature) -> rows of a distribution."""
    v = np.array([[10, 5, 0, 5], [0, 3, 3, 1], [7, 7, 1, 0], [60, 59, 0, 1]], dtype=float)
    for t in (1.0, 0.5, 2.0, 0.0):
        arg = v.copy()
        got = fn(arg, t)
        _unchanged(v, arg, "visits")
        g = np.asarray(got, dtype=np.float64)
        if t == 0 and g.shape == v.shape and not np.isclose(g[3, 1], 0) and np.allclose(g[2], [0.5, 0.5, 0, 0]):
            raise ExerciseFailed("temperature 0: 60 visits against 59 is not a tie; give the mass to the maximum "
                                 "exactly (visits == max), not visits ** (1 / a tiny temperature)")
        if t not in (0.0, 1.0) and g.shape == v.shape and not np.allclose(g, M.visit_policy(v, t), atol=1e-6):
            if np.allclose(g, M.visit_policy(v, 1.0), atol=1e-6):
                raise ExerciseFailed(f"temperature {t} gave the temperature-1 policy: raise the visits to the power "
                                     "1 / temperature")
            if np.allclose(g, M.visit_policy(v ** t, 1.0), atol=1e-6):
                raise ExerciseFailed(f"temperature {t}: the power is 1 / temperature, not temperature (T < 1 "
                                     "sharpens the policy)")
        _arr_close(got, M.visit_policy(v, t), f"temperature {t} (last row: a near tie, 60 vs 59 visits)")
    try:
        fn(np.zeros((1, 3)), 1.0)
    except NotImplementedError:
        raise
    except Exception:
        return
    raise ExerciseFailed("a row of zero visits has no policy: raise an error")


# ------------------------------------------------------------------ 6. winning moves
@check
@_quiet
def check_winning_moves(fn) -> None:
    """winning_moves(game, boards, player) -> [B, A] bool."""
    for name, n in (("tictactoe", 150), ("connect_four", 150)):
        game = get_game(name)
        boards = random_positions(game, n, seed=5, min_moves=3)
        for player in (1, -1):
            arg = boards.copy()
            got = fn(game, arg, player)
            _unchanged(boards, arg, "boards")
            want = R.winning_moves(game, boards, player)
            g = np.asarray(got)
            if g.shape != want.shape:
                raise ExerciseFailed(f"{name}: expected shape {want.shape}, got {g.shape}")
            if not np.array_equal(g.astype(bool), want):
                hint = " (for player -1, look at the opponent's moves: multiply the board by -1 first)" if player == -1 else ""
                raise ExerciseFailed(f"{name}, player {player}: {int((g.astype(bool) != want).sum())} entries differ{hint}")


# ------------------------------------------------------------------ 7. symmetry orbits
@check
@_quiet
def check_orbit_ids(fn) -> None:
    """orbit_ids(game, boards) -> [B] ids equal exactly for boards related by a symmetry."""
    for name in ("tictactoe", "connect_four"):
        game = get_game(name)
        boards = random_positions(game, 100, seed=9, min_moves=2)
        syms = game.symmetries()
        flat = boards.reshape(len(boards), -1)
        cell, _ = syms[-1]
        mirrored = flat[:, cell].reshape(boards.shape)
        # and every other symmetry applied to a few boards (rotations too, for tic-tac-toe)
        moved = np.concatenate([flat[:10, c].reshape((10,) + boards.shape[1:]) for c, _ in syms])
        both = np.concatenate([boards, mirrored, moved])
        arg = both.copy()
        got = np.asarray(fn(game, arg))
        _unchanged(both, arg, "boards")
        if got.shape != (len(both),):
            raise ExerciseFailed(f"{name}: one id per board, shape ({len(both)},), got {got.shape}")
        if not np.array_equal(got[: len(boards)], got[len(boards): 2 * len(boards)]):
            raise ExerciseFailed(f"{name}: a board and its mirror image must get the same id (use every symmetry)")
        same = got[2 * len(boards):].reshape(len(syms), 10) == got[None, :10]
        if not same.all():
            bad = sorted({int(i) for i in np.flatnonzero(~same.all(1))})
            raise ExerciseFailed(f"{name}: a board and its image under symmetry {bad[0]} of game.symmetries() get "
                                 "different ids: take the minimum code over EVERY symmetry (rotations included)")
        want = game.orbit_ids(both)
        same_want = want[:, None] == want[None]
        same_got = got[:, None] == got[None]
        if not np.array_equal(same_want, same_got):
            raise ExerciseFailed(f"{name}: boards in different orbits share an id (or the reverse): encode the whole "
                                 "board and take the minimum code over the symmetries")


# ------------------------------------------------------------------ 8. NMF
@check
@_quiet
def check_nmf(fn) -> None:
    """nmf(X, k, iters, seed) -> (W [n, k] >= 0, H [k, d] >= 0) with a small reconstruction error."""
    g = torch.Generator().manual_seed(11)
    for n, d, k in ((300, 16, 4), (120, 10, 3)):
        Wt = torch.rand(n, k, generator=g) ** 2
        Ht = torch.rand(k, d, generator=g) * (torch.rand(k, d, generator=g) > 0.5)
        X = Wt @ Ht + 0.01 * torch.rand(n, d, generator=g)
        if n == 120:       # dead units and empty squares: a zero row and a zero column, as in real activations
            X[5] = 0
            X[:, 2] = 0
        arg = X.clone()
        out = global_rng_untouched("nmf", lambda: fn(arg, k, 300, 0))
        _unchanged(X, arg, "X")
        if not isinstance(out, tuple) or len(out) != 2:
            raise ExerciseFailed("return (W, H)")
        W, H = (torch.as_tensor(o).double() for o in out)
        if tuple(W.shape) != (n, k) or tuple(H.shape) != (k, d):
            raise ExerciseFailed(f"expected W [{n}, {k}] and H [{k}, {d}], got {tuple(W.shape)} and {tuple(H.shape)}")
        if not (torch.isfinite(W).all() and torch.isfinite(H).all()):
            raise ExerciseFailed("W or H has NaN/inf: a zero row or column of X makes a denominator 0 (0/0); add "
                                 "1e-9 to both denominators")
        again = [torch.as_tensor(o).double() for o in fn(X.clone(), k, 300, 0)]
        if not (torch.equal(again[0], W) and torch.equal(again[1], H)):
            raise ExerciseFailed("two calls with the same seed gave different factors: start from a "
                                 "torch.Generator().manual_seed(seed), not the global generator")
        other = [torch.as_tensor(o).double() for o in fn(X.clone(), k, 300, 1)]
        if torch.allclose(other[0], W) and torch.allclose(other[1], H):
            raise ExerciseFailed("seed 0 and seed 1 gave the same factors: seed your generator with `seed`, "
                                 "not a fixed number")
        short = [torch.as_tensor(o).double() for o in fn(X.clone(), k, 3, 0)]
        if torch.allclose(short[0], W) and torch.allclose(short[1], H):
            raise ExerciseFailed("3 iterations and 300 gave the same factors: run `iters` updates, not a fixed "
                                 "number")
        if (W < 0).any() or (H < 0).any():
            raise ExerciseFailed("W and H must stay non-negative: multiplicative updates never change a sign")
        err = float((X.double() - W @ H).norm() / X.double().norm())
        Wr, Hr = R.nmf(X, k, 300, 0)
        ref = float((X - Wr @ Hr).norm() / X.norm())
        if err > max(1.2 * ref, ref + 0.02):
            raise ExerciseFailed(f"relative reconstruction error {err:.3f}, the reference reaches {ref:.3f}: check the "
                                 "update rules H *= W^T X / (W^T W H), W *= X H^T / (W H H^T)")
    try:
        fn(-torch.ones(10, 4), 2, 10, 0)
    except NotImplementedError:
        raise
    except Exception:
        return
    raise ExerciseFailed("a matrix with negative entries cannot be factorised non-negatively: raise an error")


# ------------------------------------------------------------------ 9. component ablation
@check
@_quiet
def check_ablate_component(fn) -> None:
    """ablate_component(net, boards, layer, maps, H, comp) -> {"dvalue": [B], "kl": [B]}."""
    game = get_game("connect_four")
    net = _net("connect_four", 2)
    boards = random_positions(game, 40, seed=3, min_moves=4)
    params = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for layer, comp in (("blocks.1.hook_resid", 0), ("blocks.1.hook_resid", 2), ("blocks.0.hook_resid", 1)):
        d = R.nmf_layer(net, boards, layer, 3, seed=0, iters=60)
        arg, maps, H = boards.copy(), d["maps"].clone(), d["H"].clone()
        got = fn(net, arg, layer, maps, H, comp)
        _unchanged(boards, arg, "boards")
        _unchanged(d["maps"], maps, "maps")
        _unchanged(d["H"], H, "H")
        for k, v in net.state_dict().items():
            _unchanged(params[k], v, f"network's {k}")
        want = R.ablate_component(net, boards, layer, d["maps"], d["H"], comp)
        if not isinstance(got, dict) or set(got) < {"dvalue", "kl"}:
            raise ExerciseFailed("return a dict with 'dvalue' and 'kl', one value per board")
        g = np.asarray(got["kl"], dtype=np.float64)
        if g.shape == want["kl"].shape and (g < -1e-6).any():
            raise ExerciseFailed("a KL divergence is never negative")
        if layer == "blocks.0.hook_resid":
            at_other = R.ablate_component(net, boards, "blocks.1.hook_resid", d["maps"], d["H"], comp)
            if g.shape == want["kl"].shape and np.allclose(g, at_other["kl"], atol=1e-8):
                raise ExerciseFailed("you ablated at blocks.1.hook_resid when asked for blocks.0.hook_resid: hook "
                                     "the `layer` argument")
        _arr_close(got["dvalue"], want["dvalue"], f"{layer}, component {comp}: |change in value|", atol=1e-6)
        _arr_close(got["kl"], want["kl"], f"{layer}, component {comp}: KL(policy || ablated policy) over legal moves",
                   atol=1e-8)
    if any(len(h._forward_hooks) for h in net.hook_dict.values()):
        raise ExerciseFailed("a hook is still attached to the network: use run_with_hooks")


# ------------------------------------------------------------------ 10. input attribution
@check
@_quiet
def check_input_attribution(fn) -> None:
    """input_attribution(net, boards, layer, H, comp) -> [B, rows, cols] gradient x input."""
    game = get_game("tictactoe")
    net = _net("tictactoe", 4)
    boards = random_positions(game, 30, seed=2, min_moves=2)
    for layer, comp in (("blocks.0.hook_resid", 1), ("hook_stem", 0)):
        d = R.nmf_layer(net, boards, layer, 3, seed=1, iters=60)
        arg, H = boards.copy(), d["H"].clone()
        got = fn(net, arg, layer, H, comp)
        _unchanged(boards, arg, "boards")
        if not torch.equal(H, d["H"]):
            raise ExerciseFailed("you wrote into the caller's H (normalising H[comp] in place, e.g. h = H[comp]; "
                                 "h /= h.norm(), edits H through the view): use h = H[comp] / H[comp].norm()")
        want = R.input_attribution(net, boards, layer, d["H"], comp)
        g = torch.as_tensor(np.asarray(got.detach() if isinstance(got, Tensor) else got)).float()
        if g.shape == want.shape:
            empty = torch.from_numpy(boards == 0)
            if g[empty].abs().max() > 1e-6:
                raise ExerciseFailed("empty squares have input 0, so gradient x input is 0 there: multiply by the input")
        _arr_close(g, want, f"{layer}, component {comp}", atol=1e-4)


# ------------------------------------------------------------------ 11. what-when-where, end to end
def _small_runs(game: str, seed: int) -> dict:
    """Three checkpoints of one small network's 'training' (iteration 0 = random init): each later
    checkpoint is the previous one's weights moved by a seeded random step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = AZNet(game=game, channels=8, n_blocks=2).eval()
        nets = {0: base}
        for it in (2, 5):
            net = AZNet(game=game, channels=8, n_blocks=2).eval()
            net.load_state_dict(nets[max(nets)].state_dict())
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.3 * torch.randn_like(p))
            nets[it] = net
    return {5: nets[5], 0: nets[0], 2: nets[2]}          # not in order: the caller sorts


@check
@_quiet
def check_what_when_where(fn) -> None:
    """what_when_where(nets, boards, labels, seed, epochs) -> probe_grid's dict, split by orbit."""
    game = get_game("tictactoe")
    nets = _small_runs("tictactoe", 6)
    boards = random_positions(game, 400, seed=6, min_moves=2)
    labels = R.all_concepts(game, boards, ("win_in_1", "opp_threat", "centre"))
    for seed in (0, 1):
        arg, lab = boards.copy(), {k: v.copy() for k, v in labels.items()}
        got = fn(nets, arg, lab, seed=seed, epochs=25)
        _unchanged(boards, arg, "boards")
        for k in labels:
            _unchanged(labels[k], lab[k], f"labels[{k!r}]")
        want = R.what_when_where(nets, boards, labels, seed=seed, epochs=25)
        if not isinstance(got, dict):
            raise ExerciseFailed("return a dict like probe_grid's: 'acc', 'low', 'high', 'input', 'majority', "
                                 "'iterations'")
        missing = [k for k in ("acc", "low", "high", "input", "majority", "iterations") if k not in got]
        if missing:
            raise ExerciseFailed(f"the result lacks {missing}: the baselines belong to the answer")
        its = np.asarray(got["iterations"])
        if its.shape != want["iterations"].shape or not np.array_equal(its, want["iterations"]):
            raise ExerciseFailed(f"iterations {its.tolist()}, expected {want['iterations'].tolist()}: checkpoints in "
                                 "sorted order, iteration 0 (the random-init control) first")
        acc = np.asarray(got["acc"], dtype=np.float64)
        if acc.shape != want["acc"].shape:
            raise ExerciseFailed(f"'acc' should be [concepts, checkpoints, layers] = {want['acc'].shape}, got "
                                 f"{acc.shape}: every layer of layer_names(net), the stem included")
        if not np.allclose(acc, want["acc"], atol=1e-6):
            ungrouped = R.probe_grid(nets, boards, labels, layer_names(nets[0]), None, seed=seed, epochs=25)
            if np.allclose(acc, ungrouped["acc"], atol=1e-6):
                raise ExerciseFailed("the probes were split at random: mirrored and rotated copies of a board land on "
                                     "both sides; pass groups=game.orbit_ids(boards)")
            _arr_close(acc, want["acc"], f"seed {seed}: held-out probe accuracy [concept, checkpoint, layer]")
        for key in ("low", "high"):
            _arr_close(got[key], want[key], f"seed {seed}: the interval's {key} end", atol=1e-6)
        _arr_close(got["input"], want["input"], f"seed {seed}: the input-only baseline (a probe on the raw input "
                   "planes, net.game.encode flattened, with the same orbit split)", atol=1e-6)
        _arr_close(got["majority"], want["majority"], f"seed {seed}: the majority-class rate of the test orbits",
                   atol=1e-6)


# ------------------------------------------------------------------ 12. NMF ablation test, end to end
@check
@_quiet
def check_nmf_ablation_test(fn) -> None:
    """nmf_ablation_test(net, boards, layer, k, seed, n_random, iters) -> per component: fired,
    contrast, random (equal-norm non-negative direction on the same maps) and their ratio."""
    game = get_game("connect_four")
    net = _net("connect_four", 7)
    boards = random_positions(game, 80, seed=8, min_moves=4)
    params = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for layer, k, seed, n_random in (("blocks.1.hook_resid", 3, 0, 2), ("blocks.0.hook_resid", 2, 3, 3)):
        arg = boards.copy()
        got = global_rng_untouched("nmf_ablation_test", lambda: fn(net, arg, layer, k, seed=seed,
                                                                    n_random=n_random, iters=60))
        _unchanged(boards, arg, "boards")
        for name, v in net.state_dict().items():
            _unchanged(params[name], v, f"network's {name}")
        want = R.nmf_ablation_test(net, boards, layer, k, seed=seed, n_random=n_random, iters=60)
        if not isinstance(got, dict):
            raise ExerciseFailed("return a dict with 'maps', 'H', 'fired', 'contrast', 'random' and 'ratio'")
        missing = [key for key in ("maps", "H", "fired", "contrast", "random", "ratio") if key not in got]
        if missing:
            raise ExerciseFailed(f"the result lacks {missing}")
        what = f"{layer}, k={k}, seed={seed}"
        _arr_close(got["H"], want["H"], f"{what}: H (nmf_layer with this k, seed and iters)", atol=1e-5)
        _arr_close(got["maps"], want["maps"], f"{what}: maps", atol=1e-5)
        _arr_close(got["fired"], want["fired"], f"{what}: mean effect (|value change| + KL) where each component "
                   "fires (top fifth of its total strength)", atol=1e-6)
        _arr_close(got["contrast"], want["contrast"], f"{what}: contrast (where it fires minus where it barely "
                   "fires, the bottom half)", atol=1e-6)
        r = np.asarray(got["random"], dtype=np.float64)
        if r.shape == want["random"].shape and not np.allclose(r, want["random"], atol=1e-6):
            raise ExerciseFailed(f"{what}: the random control differs from the reference: for component c draw "
                                 "n_random directions torch.rand(channels, generator=g) in order from ONE "
                                 "torch.Generator().manual_seed(seed), scale each to |H[c]|, put it in place of "
                                 "H[c] with the SAME maps, and average the effect on the boards where c fires")
        _arr_close(r, want["random"], f"{what}: random control", atol=1e-6)
        _arr_close(got["ratio"], want["ratio"], f"{what}: ratio fired / random", atol=1e-5)


CHECKS = {
    "puct_scores": check_puct_scores,
    "backup": check_backup,
    "add_dirichlet_noise": check_add_dirichlet_noise,
    "az_loss": check_az_loss,
    "visit_policy": check_visit_policy,
    "winning_moves": check_winning_moves,
    "orbit_ids": check_orbit_ids,
    "nmf": check_nmf,
    "ablate_component": check_ablate_component,
    "input_attribution": check_input_attribution,
    "what_when_where": check_what_when_where,
    "nmf_ablation_test": check_nmf_ablation_test,
}


# --- plausible mistakes (the tests prove each check rejects them) ------------------------
def _puct_no_mask(N, W, P, legal, c_puct):
    Q = np.divide(W, N, out=np.zeros_like(W, dtype=np.float64), where=N > 0)
    return Q + c_puct * P * np.sqrt(1.0 + N.sum(-1, keepdims=True)) / (1.0 + N)


def _puct_sqrt_no_one(N, W, P, legal, c_puct):
    Q = np.divide(W, N, out=np.zeros_like(W, dtype=np.float64), where=N > 0)
    return np.where(legal, Q + c_puct * P * np.sqrt(N.sum(-1, keepdims=True)) / (1.0 + N), -np.inf)


def _puct_w_not_q(N, W, P, legal, c_puct):
    return np.where(legal, W + c_puct * P * np.sqrt(1.0 + N.sum(-1, keepdims=True)) / (1.0 + N), -np.inf)


def _puct_ignores_c(N, W, P, legal, c_puct):
    return M.puct_scores(N, W, P, legal, 1.0)


def _puct_divides_by_n(N, W, P, legal, c_puct):
    Q = np.divide(W, N, out=np.zeros_like(W, dtype=np.float64), where=N > 0)
    U = c_puct * P * np.sqrt(1.0 + N.sum(-1, keepdims=True)) / np.maximum(N, 1)   # "avoid 0/0"
    return np.where(legal, Q + U, -np.inf)


def _backup_no_negation(N, W, path, leaf_value):
    for node, a in path:
        N[node, a] += 1
        W[node, a] += leaf_value


def _backup_leaf_sign(N, W, path, leaf_value):
    v = float(leaf_value)
    for node, a in reversed(path):
        N[node, a] += 1
        W[node, a] += v
        v = -v


def _backup_root_first_sign(N, W, path, leaf_value):
    v = -float(leaf_value)
    for node, a in path:           # alternates from the root: wrong sign on odd-length paths
        N[node, a] += 1
        W[node, a] += v
        v = -v


def _backup_reverses_path_in_place(N, W, path, leaf_value):
    path.reverse()                             # the caller's list, now leaf first
    v = -float(leaf_value)
    for node, a in path:
        N[node, a] += 1
        W[node, a] += v
        v = -v


def _noise_all_moves(priors, legal, alpha, frac, rng):
    return (1 - frac) * priors + frac * rng.dirichlet(np.full(priors.shape[1], alpha), size=len(priors))


def _noise_uniform(priors, legal, alpha, frac, rng):
    u = legal / legal.sum(1, keepdims=True)
    return (1 - frac) * priors + frac * u


def _noise_inplace(priors, legal, alpha, frac, rng):
    out = M.add_dirichlet_noise(priors, legal, alpha, frac, rng)
    priors[...] = out
    return priors


def _loss_sum(logits, value, pi, z):
    return ((z - value) ** 2).sum() - (pi * torch.log_softmax(logits, -1)).sum()


def _loss_no_log_softmax(logits, value, pi, z):
    return ((z - value) ** 2).mean() - (pi * torch.log(torch.softmax(logits, -1) + 0.1)).sum(-1).mean()


def _loss_value_only(logits, value, pi, z):
    return ((z - value) ** 2).mean()


def _loss_item(logits, value, pi, z):
    return torch.tensor(T.az_loss(logits, value, pi, z).item())


def _visit_no_temperature(visits, temperature=1.0):
    return M.visit_policy(visits, 1.0)


def _visit_temperature_multiplies(visits, temperature=1.0):
    if temperature == 0:
        return M.visit_policy(visits, 0)
    return M.visit_policy(np.asarray(visits) ** temperature, 1.0)


def _visit_argmax_first(visits, temperature=1.0):
    if temperature == 0:
        v = np.asarray(visits)
        out = np.zeros_like(v, dtype=float)
        out[np.arange(len(v)), v.argmax(-1)] = 1
        return out
    return M.visit_policy(visits, temperature)


def _win_ignore_player(game, boards, player=1):
    return R.winning_moves(game, boards, 1)


def _win_any_line_of_three(game, boards, player=1):
    out = np.zeros((len(boards), game.n_actions), dtype=bool)
    b = boards * player
    mask = game.legal_mask(b)
    flat = b.reshape(len(b), -1)[:, game.lines]
    near = ((flat == 1).sum(-1) == game.connect - 1).any(-1)
    return mask & near[:, None]


def _win_after_move_any_player(game, boards, player=1):
    return R.winning_moves(game, boards, 1) | R.winning_moves(game, boards, -1)


def _orbit_identity_only(game, boards):
    flat = boards.reshape(len(boards), -1).astype(np.int64) + 1
    return (flat * 3 ** np.arange(flat.shape[1])).sum(1)


def _orbit_stone_counts(game, boards):
    return (boards == 1).reshape(len(boards), -1).sum(1) * 100 + (boards == -1).reshape(len(boards), -1).sum(1)


def _orbit_first_symmetry_pair(game, boards):
    flat = boards.reshape(len(boards), -1).astype(np.int64) + 1
    pows = 3 ** np.arange(flat.shape[1])
    syms = game.symmetries()[:2]
    return np.stack([(flat[:, c] * pows).sum(1) for c, _ in syms], 1).min(1)


def _nmf_gradient_step(X, k, iters=200, seed=0):
    X = torch.as_tensor(X).double()
    g = torch.Generator().manual_seed(seed)
    W = torch.rand(X.shape[0], k, generator=g, dtype=torch.double)
    H = torch.rand(k, X.shape[1], generator=g, dtype=torch.double)
    for _ in range(iters):
        R_ = W @ H - X
        W, H = W - 0.01 * R_ @ H.T, H - 0.01 * W.T @ R_
    return W, H


def _nmf_swapped_updates(X, k, iters=200, seed=0):
    X = torch.as_tensor(X).double()
    if (X < 0).any():
        raise ValueError("negative")
    g = torch.Generator().manual_seed(seed)
    W = torch.rand(X.shape[0], k, generator=g, dtype=torch.double)
    H = torch.rand(k, X.shape[1], generator=g, dtype=torch.double)
    for _ in range(iters):      # the ratio upside down: moves away from the fit
        H = H * (W.T @ W @ H + 1e-9) / (W.T @ X + 1e-9)
        W = W * (X @ H.T) / (W @ H @ H.T + 1e-9)
    return W, H


def _nmf_no_check(X, k, iters=200, seed=0):
    X = torch.as_tensor(X).double().clamp_min(0)
    return R.nmf(X, k, iters, seed)


def _ablate_zero_channel(net, boards, layer, maps, H, comp):
    x = net.game.encode(boards)
    ch = int(H[comp].argmax())

    def hook(act, hook):
        act = act.clone()
        act[:, ch] = 0
        return act
    return _effects(net, boards, x, layer, hook)


def _ablate_no_clamp(net, boards, layer, maps, H, comp):
    x = net.game.encode(boards)
    part = maps[:, comp][:, None] * H[comp][None, :, None, None]
    return _effects(net, boards, x, layer, lambda act, hook: act - part)


def _ablate_reverse_kl(net, boards, layer, maps, H, comp):
    out = R.ablate_component(net, boards, layer, maps, H, comp)
    x = net.game.encode(boards)
    part = maps[:, comp][:, None] * H[comp][None, :, None, None]
    with torch.no_grad():
        logits, _ = net(x)
        a_logits, _ = net.run_with_hooks(x, fwd_hooks=[(layer, lambda act, hook: (act - part).clamp_min(0))])
    mask = torch.from_numpy(net.game.legal_mask(boards))
    lp = torch.log_softmax(logits.masked_fill(~mask, -1e9), -1)
    lq = torch.log_softmax(a_logits.masked_fill(~mask, -1e9), -1)
    out["kl"] = (lq.exp() * (lq - lp)).masked_fill(~mask, 0).sum(-1).numpy()
    return out


def _effects(net, boards, x, layer, hook):
    with torch.no_grad():
        logits, value = net(x)
        a_logits, a_value = net.run_with_hooks(x, fwd_hooks=[(layer, hook)])
    mask = torch.from_numpy(net.game.legal_mask(boards))
    lp = torch.log_softmax(logits.masked_fill(~mask, -1e9), -1)
    lq = torch.log_softmax(a_logits.masked_fill(~mask, -1e9), -1)
    return {"dvalue": (a_value - value).abs().numpy(), "kl": (lp.exp() * (lp - lq)).masked_fill(~mask, 0).sum(-1).numpy()}


def _attr_gradient_only(net, boards, layer, H, comp):
    x = net.game.encode(boards).requires_grad_(True)
    f = R._feature_with_grad(net, x, layer, H, comp)
    (g,) = torch.autograd.grad(f.sum(), x)
    return g.sum(1)


def _attr_own_plane_only(net, boards, layer, H, comp):
    x = net.game.encode(boards).requires_grad_(True)
    f = R._feature_with_grad(net, x, layer, H, comp)
    (g,) = torch.autograd.grad(f.sum(), x)
    return (g * x)[:, 0]


def _attr_unnormalised_direction(net, boards, layer, H, comp):
    x = net.game.encode(boards).requires_grad_(True)
    store = {}

    def keep(act, hook):
        store["a"] = act
        return act
    net.run_with_hooks(x, fwd_hooks=[(layer, keep)])
    f = torch.einsum("bcrk,c->b", store["a"], H[comp])
    (g,) = torch.autograd.grad(f.sum(), x)
    return (g * x).sum(1)


def _noise_global_rng(priors, legal, alpha, frac, rng):
    noise = np.zeros_like(priors, dtype=np.float64)
    for i in range(len(priors)):       # np.random.dirichlet: the global generator, not rng
        idx = np.flatnonzero(legal[i])
        noise[i, idx] = np.random.dirichlet(np.full(len(idx), alpha))
    return (1 - frac) * priors + frac * noise


def _noise_own_seed(priors, legal, alpha, frac, rng):
    return M.add_dirichlet_noise(priors, legal, alpha, frac, np.random.default_rng(0))


def _noise_one_draw(priors, legal, alpha, frac, rng):
    eta = rng.dirichlet(np.full(priors.shape[1], alpha))     # one draw for the whole batch
    noise = np.where(legal, eta, 0.0)
    return (1 - frac) * priors + frac * noise / noise.sum(1, keepdims=True)


def _loss_clamps_pi_in_place(logits, value, pi, z):
    pi.clamp_(min=1e-8)                 # "avoid log 0", written into the caller's targets
    return T.az_loss(logits, value, pi, z)


def _visit_zero_as_tiny_temperature(visits, temperature=1.0):
    return M.visit_policy(visits, max(temperature, 1e-2))


def _orbit_identity_and_mirror(game, boards):
    flat = boards.reshape(len(boards), -1).astype(np.int64) + 1
    pows = 3 ** np.arange(flat.shape[1])
    syms = [game.symmetries()[0], game.symmetries()[-1]]     # forgets the rotations
    return np.stack([(flat[:, c] * pows).sum(1) for c, _ in syms], 1).min(1)


def _nmf_global_rng(X, k, iters=200, seed=0):
    X = torch.as_tensor(X).double()
    if (X < 0).any():
        raise ValueError("negative")
    W = torch.rand(X.shape[0], k, dtype=torch.double)       # the global generator: `seed` is ignored
    H = torch.rand(k, X.shape[1], dtype=torch.double)
    for _ in range(iters):
        H = H * (W.T @ X) / (W.T @ W @ H + 1e-9)
        W = W * (X @ H.T) / (W @ H @ H.T + 1e-9)
    return W.float(), H.float()


def _nmf_fixed_seed(X, k, iters=200, seed=0):
    return R.nmf(X, k, iters, 0)


def _nmf_fixed_iters(X, k, iters=200, seed=0):
    return R.nmf(X, k, 300, seed)


def _nmf_no_eps(X, k, iters=200, seed=0):
    X = torch.as_tensor(X).double()
    if (X < 0).any():
        raise ValueError("negative")
    g = torch.Generator().manual_seed(seed)
    W = torch.rand(X.shape[0], k, generator=g, dtype=torch.double)
    H = torch.rand(k, X.shape[1], generator=g, dtype=torch.double)
    for _ in range(iters):
        H = H * (W.T @ X) / (W.T @ W @ H)
        W = W * (X @ H.T) / (W @ H @ H.T)
    return W.float(), H.float()


def _ablate_fixed_layer(net, boards, layer, maps, H, comp):
    return R.ablate_component(net, boards, "blocks.1.hook_resid", maps, H, comp)


def _ablate_normalises_h_in_place(net, boards, layer, maps, H, comp):
    h = H[comp]
    h /= h.norm()                          # a view of H: the caller's H changes
    return R.ablate_component(net, boards, layer, maps * 0 + maps, H, comp)


def _attr_normalises_h_in_place(net, boards, layer, H, comp):
    h = H[comp]
    h /= h.norm()
    return R.input_attribution(net, boards, layer, H, comp)


def _www_random_split(nets, boards, labels, seed=0, epochs=150, progress=None):
    return R.probe_grid(nets, boards, labels, layer_names(nets[min(nets)]), None, seed=seed, epochs=epochs)


def _www_dict_order(nets, boards, labels, seed=0, epochs=150, progress=None):
    """Checkpoints in the dict's order, not sorted: iteration 0 is no longer row 0."""
    layers = layer_names(nets[min(nets)])
    groups = get_game(nets[min(nets)].game.name).orbit_ids(boards)
    out = R.probe_grid(nets, boards, labels, layers, groups, seed=seed, epochs=epochs)
    order = [sorted(nets).index(it) for it in nets]
    for key in ("acc", "low", "high"):
        out[key] = out[key][:, order]
    out["iterations"] = np.array(list(nets))
    return out


def _www_blocks_only(nets, boards, labels, seed=0, epochs=150, progress=None):
    """The stem left out of the 'where' axis."""
    layers = [lay for lay in layer_names(nets[min(nets)]) if lay != "hook_stem"]
    groups = nets[min(nets)].game.orbit_ids(boards)
    return R.probe_grid(nets, boards, labels, layers, groups, seed=seed, epochs=epochs)


def _www_input_from_stem(nets, boards, labels, seed=0, epochs=150, progress=None):
    """'Input-only' read from the random network's stem instead of the raw input planes."""
    groups = nets[min(nets)].game.orbit_ids(boards)
    out = R.what_when_where(nets, boards, labels, seed=seed, epochs=epochs)
    stem = R.layer_acts(nets[0], boards, ["hook_stem"])["hook_stem"]
    out["input"] = np.array([R.probe_accuracy(stem, labels[n], groups, seed, epochs)["acc"] for n in labels])
    return out


def _nat_unmatched_norm(net, boards, layer, k, seed=0, n_random=4, iters=200):
    """The random direction is not scaled to |H[c]|: a different magnitude, not a control."""
    return _nat(net, boards, layer, k, seed, n_random, iters, scale=False)


def _nat_fresh_maps(net, boards, layer, k, seed=0, n_random=4, iters=200):
    """The random direction gets random maps of its own instead of the component's maps."""
    return _nat(net, boards, layer, k, seed, n_random, iters, same_maps=False)


def _nat_all_boards(net, boards, layer, k, seed=0, n_random=4, iters=200):
    """The effect averaged over every board, not where the component fires."""
    return _nat(net, boards, layer, k, seed, n_random, iters, where_fires=False)


def _nat_global_rng(net, boards, layer, k, seed=0, n_random=4, iters=200):
    """Directions from the global generator (torch.rand without generator=)."""
    return _nat(net, boards, layer, k, seed, n_random, iters, global_rng=True)


def _nat(net, boards, layer, k, seed, n_random, iters, scale=True, same_maps=True, where_fires=True,
         global_rng=False):
    d = R.nmf_layer(net, boards, layer, k, seed=seed, iters=iters)
    maps, H = d["maps"], d["H"]
    st = maps.sum((2, 3)).numpy()
    g = torch.Generator().manual_seed(seed)
    out = {key: np.zeros(k) for key in ("fired", "contrast", "random")}
    for c in range(k):
        hi = st[:, c] >= np.quantile(st[:, c], 0.8) if where_fires else np.ones(len(st), bool)
        lo = st[:, c] <= np.quantile(st[:, c], 0.5)
        e = sum(R.ablate_component(net, boards, layer, maps, H, c).values())
        out["fired"][c], out["contrast"][c] = e[hi].mean(), e[hi].mean() - e[lo].mean()
        draws = []
        for _ in range(n_random):
            r = torch.rand(H.shape[1]) if global_rng else torch.rand(H.shape[1], generator=g)
            H_r = H.clone()
            H_r[c] = r / r.norm() * H[c].norm() if scale else r
            m = maps if same_maps else maps[:, [c]][torch.randperm(len(maps), generator=g)].expand_as(maps)
            draws.append(sum(R.ablate_component(net, boards, layer, m, H_r, c).values())[hi].mean())
        out["random"][c] = float(np.mean(draws))
    return {"maps": maps, "H": H, **out, "ratio": out["fired"] / np.maximum(out["random"], 1e-12)}


WRONG_ANSWERS = {
    "puct_scores": [_puct_no_mask, _puct_sqrt_no_one, _puct_w_not_q, _puct_ignores_c, _puct_divides_by_n],
    "backup": [_backup_no_negation, _backup_leaf_sign, _backup_root_first_sign,
               _backup_reverses_path_in_place],
    "add_dirichlet_noise": [_noise_all_moves, _noise_uniform, _noise_inplace, _noise_global_rng,
                            _noise_own_seed, _noise_one_draw],
    "az_loss": [_loss_sum, _loss_no_log_softmax, _loss_value_only, _loss_item, _loss_clamps_pi_in_place],
    "visit_policy": [_visit_no_temperature, _visit_temperature_multiplies, _visit_argmax_first,
                     _visit_zero_as_tiny_temperature],
    "winning_moves": [_win_ignore_player, _win_any_line_of_three, _win_after_move_any_player],
    "orbit_ids": [_orbit_identity_only, _orbit_stone_counts, _orbit_first_symmetry_pair, _orbit_identity_and_mirror],
    "nmf": [_nmf_gradient_step, _nmf_swapped_updates, _nmf_no_check, _nmf_global_rng, _nmf_fixed_seed,
            _nmf_fixed_iters, _nmf_no_eps],
    "ablate_component": [_ablate_zero_channel, _ablate_no_clamp, _ablate_reverse_kl, _ablate_fixed_layer,
                         _ablate_normalises_h_in_place],
    "input_attribution": [_attr_gradient_only, _attr_own_plane_only, _attr_unnormalised_direction,
                          _attr_normalises_h_in_place],
    "what_when_where": [_www_random_split, _www_dict_order, _www_blocks_only, _www_input_from_stem],
    "nmf_ablation_test": [_nat_unmatched_norm, _nat_fresh_maps, _nat_all_boards, _nat_global_rng],
}
