"""Checks for chapter 03 (the RLHF brain scan).

References: utils.brainscan.metrics (per-matrix and per-feature metrics) and
utils.brainscan.analysis (weight deltas, rank-k models, recovery curves). Every random input
comes from a local torch.Generator; the tiny GPT-2 used by the model-level checks is built
inside `torch.random.fork_rng`, so the global generator is left exactly as it was.
"""
from __future__ import annotations

import copy
import functools
import math

import torch

from utils.brainscan import analysis as A
from utils.brainscan import metrics as M
from utils.exercises import ExerciseFailed, check


def _with_singular_values(s, m, n, seed):
    return M.matrix_with_singular_values(s, m, n, seed).float()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unchanged(before: torch.Tensor, after: torch.Tensor, what: str) -> None:
    if not torch.equal(before, after):
        raise ExerciseFailed(f"{what} was changed in place: work on a copy (the chapter reuses it)")


@functools.lru_cache(maxsize=1)
def _tiny_pair_cached():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=40, n_positions=12, n_embd=16, n_layer=2, n_head=2)
    with torch.random.fork_rng(devices=[]):      # model init draws from the global RNG: restore it
        torch.manual_seed(0)
        base = GPT2LMHeadModel(cfg).eval()
    tuned = copy.deepcopy(base)
    g = _gen(1)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if name == "transformer.h.0.mlp.c_fc.weight":          # a known rank-2 change
                p.add_(0.2 * torch.randn(p.shape[0], 2, generator=g) @ torch.randn(2, p.shape[1], generator=g))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return base, tuned


def _tiny_pair():
    base, tuned = _tiny_pair_cached()
    return copy.deepcopy(base), copy.deepcopy(tuned)


def _state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same_state(model, state, what):
    for n, p in model.named_parameters():
        if not torch.equal(p.detach(), state[n]):
            raise ExerciseFailed(f"{what} changed ({n}): deep-copy the base model before adding deltas")


_TOKENS = torch.tensor([[1, 5, 9, 3, 7, 2], [4, 4, 8, 0, 11, 6], [2, 13, 21, 5, 5, 1]])


@torch.no_grad()
def _logit_score(model) -> float:
    """A behavioural score of a tiny GPT-2 that can be negative: mean logit of token 3 minus token 7."""
    logits = model(_TOKENS).logits
    return float((logits[..., 3] - logits[..., 7]).mean())


# ------------------------------------------------------------------ weight metrics
@check
def check_effective_rank(effective_rank) -> None:
    """effective_rank(dW) -> exp(entropy of s_i^2 / sum s_j^2)."""
    cases = [
        ("a rank-1 matrix", _with_singular_values([3.0], 10, 6, 0)),
        ("4 equal singular values", _with_singular_values([2.0] * 4, 10, 6, 1)),
        ("singular values (3, 1)", _with_singular_values([3.0, 1.0], 8, 8, 2)),
        ("a random 16 x 24 matrix", torch.randn(16, 24, generator=_gen(3))),
        ("a scaled random matrix", 1e-3 * torch.randn(12, 5, generator=_gen(4))),
        ("a wide 6 x 40 delta", 0.02 * torch.randn(6, 40, generator=_gen(5))),
        ("a delta that moved two units only (exact zero singular values)",
         torch.diag(torch.tensor([3.0, 1.0, 0.0, 0.0]))),
    ]
    for what, A_ in cases:
        want = M.effective_rank_energy(A_)
        before = A_.clone()
        got = float(effective_rank(A_))
        _unchanged(before, A_, "dW")
        if math.isnan(got):
            raise ExerciseFailed(f"{what}: got NaN; a zero singular value gives 0 * log(0): drop the p_i that are "
                                 "0 before taking the entropy (they contribute nothing)")
        if math.isclose(got, 2 ** math.log(want), rel_tol=1e-4) and not math.isclose(want, got, rel_tol=1e-4):
            raise ExerciseFailed(f"{what}: you raised 2 to a natural-log entropy: use the same base for the log "
                                 "and the exponential (exp of the entropy in nats)")
        if math.isclose(got, M.effective_rank_roy_vetterli(A_), rel_tol=1e-4) and not math.isclose(want, got, rel_tol=1e-4):
            raise ExerciseFailed(f"{what}: you used p_i = s_i / sum s_j (the classic Roy-Vetterli definition); "
                                 f"the source's effective rank squares them: p_i = s_i^2 / sum s_j^2")
        if math.isclose(got, math.log(want), rel_tol=1e-4) and not math.isclose(want, got, rel_tol=1e-4):
            raise ExerciseFailed(f"{what}: you returned the entropy; the effective rank is exp(entropy)")
        if not math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6):
            raise ExerciseFailed(f"{what}: expected {want:.4f}, got {got:.4f} (a continuous measure: a rank-r matrix "
                                 "with equal singular values gives r, unequal ones give less than r)")
    got = float(effective_rank(torch.zeros(5, 4)))
    if got != 0.0:
        raise ExerciseFailed(f"a zero delta (a matrix the method did not move) should give 0, got {got}")


@check
def check_top1_energy(top1_energy) -> None:
    """top1_energy(dW) -> s_1^2 / sum_j s_j^2."""
    cases = [
        ("singular values (3, 1, 1, 1, 1, 1)", _with_singular_values([3.0, 1, 1, 1, 1, 1], 12, 9, 0), 9 / 14),
        ("the identity", torch.eye(4), 0.25),
        ("a rank-1 matrix", _with_singular_values([0.7], 6, 10, 1), 1.0),
        ("a random 30 x 20 delta", 0.01 * torch.randn(30, 20, generator=_gen(2)), None),
        ("a scaled (5, 2) matrix", 40.0 * _with_singular_values([5.0, 2.0], 7, 7, 3), 25 / 29),
    ]
    for what, A_, want in cases:
        want = M.top1_energy(A_) if want is None else want
        before = A_.clone()
        got = float(top1_energy(A_))
        _unchanged(before, A_, "dW")
        if not math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-7):
            s = torch.linalg.svdvals(A_.double())
            hint = (" (that is s_1 / sum s_j: square the singular values, energy is s^2)"
                    if math.isclose(got, float(s[0] / s.sum()), rel_tol=1e-4) else
                    " (that is s_1 / ||dW||_F, a norm ratio: the energy share is its square)"
                    if math.isclose(got, float(s[0] / s.norm()), rel_tol=1e-4) else
                    " (use the LARGEST singular value, s[0] from torch.linalg.svdvals)")
            raise ExerciseFailed(f"{what}: expected {want:.4f}, got {got:.4f}{hint}")
    got = float(top1_energy(torch.zeros(3, 3)))
    if got != 0.0:
        raise ExerciseFailed(f"a zero delta should give 0 (no energy anywhere), got {got}")


@check
def check_rank_k_approx(rank_k_approx) -> None:
    """rank_k_approx(dW, k) -> U_k S_k V_k^T, the best rank-k approximation."""
    for A_ in (_with_singular_values([5.0, 3.0, 2.0, 1.0, 0.5], 12, 7, 5),
               0.01 * torch.randn(9, 20, generator=_gen(6))):
        for k in (1, 2, 4):
            want = M.truncate_rank(A_, k)
            before = A_.clone()
            got = rank_k_approx(A_, k)
            _unchanged(before, A_, "dW")
            if not isinstance(got, torch.Tensor):
                raise ExerciseFailed(f"rank_k_approx should return a tensor, got {type(got).__name__}")
            if tuple(got.shape) != tuple(A_.shape):
                raise ExerciseFailed(f"k={k}: the approximation must have the shape of dW {tuple(A_.shape)}, "
                                     f"got {tuple(got.shape)}")
            r = int(torch.linalg.matrix_rank(got.double(), atol=1e-4 * float(A_.abs().max())))
            if r != k:
                raise ExerciseFailed(f"k={k}: the result has rank {r}, not {k}")
            if not torch.allclose(got.float(), want.float(), atol=1e-5 * float(A_.abs().max()) + 1e-7):
                sv = torch.linalg.svdvals(got.double())[:k]
                U_, S_, V_ = torch.svd(A_)
                v_rows = (U_[:, :k] * S_[:k]) @ V_[:k]
                hint = ("its singular values are all 1: multiply by S_k" if torch.allclose(sv, torch.ones_like(sv), atol=1e-4)
                        else "torch.svd returns V, not V^T: use V[:, :k].T (or torch.linalg.svd, whose third "
                             "output is already Vh)" if v_rows.shape == got.shape and torch.allclose(got.float(), v_rows, atol=1e-5)
                        else "keep the k LARGEST singular directions (torch.linalg.svd sorts them in descending order)")
                raise ExerciseFailed(f"k={k}: not the best rank-{k} approximation; {hint}")
    A_ = torch.randn(5, 3, generator=_gen(7))
    full = rank_k_approx(A_.clone(), 3)
    if not isinstance(full, torch.Tensor) or tuple(full.shape) != (5, 3) or not torch.allclose(full.float(), A_, atol=1e-5):
        raise ExerciseFailed("k = min(m, n) keeps every direction: the result should be dW itself")
    z = rank_k_approx(A_.clone(), 0)
    if tuple(z.shape) != (5, 3) or float(z.abs().max()) > 1e-6:
        raise ExerciseFailed("k=0 should give a zero matrix of dW's shape (no directions kept: the base model)")


@check
def check_direction_alignment(direction_alignment) -> None:
    """direction_alignment(dA, dB, k) -> mean_i max_j |u_i^A . u_j^B| over top-k LEFT singular vectors."""
    X = _with_singular_values([5.0, 4.0, 3.0, 2.0, 1.0], 20, 10, 0)
    e = torch.eye(20)
    cases = [
        ("a delta with itself", X, X.clone(), 5),
        ("a delta and -3 times itself (sign and scale do not matter)", X, -3 * X, 5),
        ("orthogonal rank-1 deltas", torch.outer(e[0], e[1][:10]), torch.outer(e[1], e[1][:10]), 1),
        ("rank-1 deltas at 45 degrees", torch.outer(e[0], e[1][:10]), torch.outer((e[0] + e[1]) / math.sqrt(2), e[2][:10]), 1),
    ]
    g = _gen(1)
    for i in range(3):
        a, b = torch.randn(24, 16, generator=g), torch.randn(24, 16, generator=g)
        cases.append((f"two random 24 x 16 deltas (#{i})", a, b, 4))
    a = torch.randn(30, 12, generator=g)
    cases.append(("a delta and a noisy copy", a, a + 0.5 * torch.randn(30, 12, generator=g), 3))
    for what, a, b, k in cases:
        want = M.direction_alignment(a, b, k)
        ca, cb = a.clone(), b.clone()
        got = float(direction_alignment(a, b, k))
        _unchanged(ca, a, "dA")
        _unchanged(cb, b, "dB")
        if not math.isclose(got, want, abs_tol=1e-4):
            Ua = torch.linalg.svd(a.double(), full_matrices=False)[0]
            Ub = torch.linalg.svd(b.double(), full_matrices=False)[0]
            if math.isclose(got, float((Ua[:, :k].T @ Ub[:, :k]).abs().max(dim=0).values.mean()), abs_tol=1e-6):
                raise ExerciseFailed(f"{what}, k={k}: you took, for each direction of dB, its best match in dA (max "
                                     "over dim 0); the measure is mean over i (dA's directions) of max over j (dB's): "
                                     "max(dim=1)")
            if math.isclose(got, float((Ua[:k] @ Ub[:k].T).abs().max(dim=1).values.mean()), abs_tol=1e-6):
                raise ExerciseFailed(f"{what}, k={k}: U[:k] takes ROWS of U; the singular directions are its "
                                     "columns, U[:, :k]")
            raise ExerciseFailed(f"{what}, k={k}: expected {want:.4f}, got {got:.4f}; take the top-k LEFT singular "
                                 "vectors (columns of U), the absolute cosine |u_i . u_j|, the max over j, then the "
                                 "mean over i")


# ------------------------------------------------------------------ model-level methods
@check
def check_weight_deltas(weight_deltas) -> None:
    """weight_deltas(base, tuned) -> {name: W_tuned - W_base} for every parameter."""
    base, tuned = _tiny_pair()
    sb, st = _state(base), _state(tuned)
    got = weight_deltas(base, tuned)
    _same_state(base, sb, "the base model")
    _same_state(tuned, st, "the tuned model")
    if not isinstance(got, dict):
        raise ExerciseFailed(f"return a dict {{parameter name: delta}}, got {type(got).__name__}")
    want = A.weight_deltas(base, tuned)
    missing = sorted(set(want) - set(got))
    if missing:
        raise ExerciseFailed(f"{len(missing)} parameters are missing, e.g. {missing[0]} (keep 1-D ones too: biases "
                             "and LayerNorms are part of the change)")
    for n, d in want.items():
        if not isinstance(got[n], torch.Tensor) or tuple(got[n].shape) != tuple(d.shape):
            raise ExerciseFailed(f"{n}: expected a tensor of shape {tuple(d.shape)}")
        if got[n].requires_grad:
            raise ExerciseFailed(f"{n}: the delta still requires grad; detach it (it is data, not part of a graph)")
        if torch.allclose(got[n].float(), -d, atol=1e-6) and float(d.abs().max()) > 0:
            raise ExerciseFailed(f"{n}: the sign is flipped: dW = W_tuned - W_base")
        if not torch.allclose(got[n].float(), d, atol=1e-6):
            raise ExerciseFailed(f"{n}: not W_tuned - W_base")


@check
def check_rank_k_model(rank_k_model) -> None:
    """rank_k_model(base, deltas, k) -> copy of base with W + trunc_k(dW) in 2-D matrices, 1-D at base."""
    base, tuned = _tiny_pair()
    deltas = A.weight_deltas(base, tuned)
    sb = _state(base)
    dcopy = {n: d.clone() for n, d in deltas.items()}
    for k in (0, 1, 3, None):
        got = rank_k_model(base, deltas, k)
        _same_state(base, sb, "the base model")
        for n in deltas:
            _unchanged(dcopy[n], deltas[n], f"deltas[{n!r}]")
        if got is base:
            raise ExerciseFailed("return a new model (a deep copy of base), not base itself")
        want = A.rebuilt_model(base, deltas, k)
        gp, wp = dict(got.named_parameters()), dict(want.named_parameters())
        for n, p in wp.items():
            if deltas[n].ndim == 1 and not torch.equal(gp[n].detach(), sb[n]):
                raise ExerciseFailed(f"k={k}: {n} is 1-D (no rank): it must stay at its BASE value in a rank-k model")
            if not torch.allclose(gp[n].detach(), p.detach(), atol=1e-5):
                raise ExerciseFailed(f"k={k}: {n} should be W_base + (best rank-{k} approximation of dW)"
                                     + (" (k=None: the whole dW)" if k is None else ""))
        if abs(_logit_score(got) - _logit_score(want)) > 1e-4:
            raise ExerciseFailed(f"k={k}: the rebuilt model's outputs differ from the reference")


@check
def check_recovery_curve(recovery_curve) -> None:
    """recovery_curve(score_fn, base, deltas, ks, score_base, score_tuned, build) -> [recovery(k)]."""
    base, tuned = _tiny_pair()
    deltas = A.weight_deltas(base, tuned)
    s_base, s_tuned = _logit_score(base), _logit_score(tuned)
    calls = []

    def build(b, d, k):
        calls.append(k)
        return A.rebuilt_model(b, d, k)

    ks = [0, 1, 2, 5, None]
    sb, dcopy = _state(base), {n: d.clone() for n, d in deltas.items()}
    # the real gap, a made-up tuned score that makes recovery > 1 and < 0, and a negative gap
    for st in (s_tuned, s_base + 0.1 * (s_tuned - s_base), s_base - 2.0):
        calls.clear()
        got = [float(x) for x in recovery_curve(_logit_score, base, deltas, list(ks), s_base, st, build)]
        _same_state(base, sb, "the base model")
        for n in deltas:
            _unchanged(dcopy[n], deltas[n], f"deltas[{n!r}]")
        want = A.recovery_curve(_logit_score, base, deltas, ks, s_base, st)
        if sorted(calls, key=str) != sorted(ks, key=str):
            raise ExerciseFailed(f"build the rank-k model once per k with build(base, deltas, k); it was called "
                                 f"with k = {calls}")
        if len(got) != len(ks):
            raise ExerciseFailed(f"return one recovery per k ({len(ks)}), got {len(got)}")
        for k, g, w in zip(ks, got, want):
            if not math.isclose(g, w, rel_tol=1e-4, abs_tol=1e-5):
                hint = (" (do not clip: recovery can be negative or above 1)" if 0 <= g <= 1 and not 0 <= w <= 1 else
                        " (recovery = (score_k - score_base) / (score_tuned - score_base))")
                raise ExerciseFailed(f"k={k}: expected {w:.4f}, got {g:.4f}{hint}")
    got = [float(x) for x in recovery_curve(_logit_score, base, deltas, [1], s_base, s_base, build)]
    if not (len(got) == 1 and math.isnan(got[0])):
        raise ExerciseFailed(f"when the tuned score equals the base score there is nothing to recover: return NaN, "
                             f"got {got}")


@check
def check_random_delta_like(random_delta_like) -> None:
    """random_delta_like(dW, generator) -> same singular values, random singular directions."""
    cases = [("a rank-3 40 x 30 delta", _with_singular_values([3.0, 2.0, 0.5], 40, 30, 0)),
             ("a full-rank 24 x 16 delta", 0.01 * torch.randn(24, 16, generator=_gen(1))),
             ("a rank-1 12 x 50 delta", _with_singular_values([0.2], 12, 50, 2))]
    for what, d in cases:
        before = d.clone()
        rng = torch.get_rng_state()
        got = random_delta_like(d, _gen(10))
        if not torch.equal(rng, torch.get_rng_state()):
            raise ExerciseFailed("you drew from the global random generator: pass generator=generator to torch.randn")
        _unchanged(before, d, "dW")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(d.shape):
            raise ExerciseFailed(f"{what}: expected a tensor of shape {tuple(d.shape)}")
        s_want = torch.linalg.svdvals(d.double())
        s_got = torch.linalg.svdvals(got.double())
        r_want = int((s_want > 1e-6 * s_want[0]).sum())
        r_got = int((s_got > 1e-6 * s_want[0]).sum())
        if r_got != r_want:
            raise ExerciseFailed(f"{what}: the null has rank {r_got}, dW has rank {r_want}; match the rank (keep "
                                 "dW's singular values, draw only the directions)")
        if not torch.allclose(s_got, s_want, rtol=1e-4, atol=1e-6 * float(s_want[0])):
            raise ExerciseFailed(f"{what}: the singular values differ from dW's (norm-matching alone is not enough: "
                                 "the spectrum must match too)")
        cos = float((got.double().flatten() @ d.double().flatten()) / (got.double().norm() * d.double().norm()))
        if abs(cos) > 0.5:
            raise ExerciseFailed(f"{what}: the null is almost parallel to dW (cosine {cos:.2f}); its singular "
                                 "directions must be random")
        again = random_delta_like(d, _gen(10))
        other = random_delta_like(d, _gen(11))
        if not torch.allclose(again, got):
            raise ExerciseFailed(f"{what}: the same generator seed must give the same null (draw only from generator)")
        if torch.allclose(other, got):
            raise ExerciseFailed(f"{what}: a different generator seed gave the same null")
        if got.dtype != d.dtype:
            raise ExerciseFailed(f"{what}: dW is {d.dtype}, the null is {got.dtype}: return dW's dtype "
                                 "(.to(dW.dtype)); the chapter adds it to the model's weights")
        # Both singular-vector sides must be random: the null's top left (right) singular vector
        # should be nowhere near dW's own (for a random unit vector |cos| is about 1/sqrt(dim)).
        Ud, _, Vhd = torch.linalg.svd(d.double(), full_matrices=False)
        Ug, _, Vhg = torch.linalg.svd(got.double(), full_matrices=False)
        r_keep = min(r_want, 2)
        left = float((Ud[:, :r_keep].T @ Ug[:, :r_keep]).norm() ** 2) / r_keep
        right = float((Vhd[:r_keep] @ Vhg[:r_keep].T).norm() ** 2) / r_keep
        if left > 0.8:
            raise ExerciseFailed(f"{what}: the null keeps dW's LEFT singular vectors (U); draw random orthonormal "
                                 "columns for both sides, U' and V'")
        if right > 0.8:
            raise ExerciseFailed(f"{what}: the null keeps dW's RIGHT singular vectors (V); draw random orthonormal "
                                 "columns for both sides, U' and V'")
    # The distribution: random directions are centred (a Gaussian draw orthonormalised), so
    # the mean of many nulls shrinks towards 0; positive-only draws (torch.rand) do not.
    d = _with_singular_values([1.0], 20, 16, 9)
    draws = torch.stack([random_delta_like(d, _gen(100 + i)).double() for i in range(24)])
    spread = float(draws.mean(0).norm() / draws[0].norm())
    if spread > 0.5:
        raise ExerciseFailed(f"24 nulls of a rank-1 delta have a mean of relative norm {spread:.2f} (about 0.2 "
                             "expected): the random directions are not centred; draw them with torch.randn "
                             "(Gaussian), not torch.rand (uniform on [0, 1))")
    d64 = _with_singular_values([2.0, 1.0], 10, 8, 4).double()
    got = random_delta_like(d64, _gen(5))
    if got.dtype != torch.float64:
        raise ExerciseFailed(f"a float64 dW gave a {got.dtype} null: return dW's dtype")
    v = torch.randn(30, generator=_gen(3))
    got = random_delta_like(v, _gen(4))
    if tuple(got.shape) != (30,) or not math.isclose(float(got.norm()), float(v.norm()), rel_tol=1e-4):
        raise ExerciseFailed("a 1-D delta (a bias) should give a random vector of the same norm")
    if abs(float(got @ v) / float(v.norm() ** 2)) > 0.6:
        raise ExerciseFailed("the 1-D null is almost parallel to the delta: draw a random direction")


# ------------------------------------------------------------------ SAE features
@check
def check_topk_jaccard(topk_jaccard) -> None:
    """topk_jaccard(a, b, k) -> |top-k(a) & top-k(b)| / |top-k(a) | top-k(b)|."""
    g = _gen(6)
    a = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    b = torch.tensor([0.0, 4.0, 3.0, 2.0, 1.0, 5.0])
    cases = [(a, a.clone(), 3), (a, b, 3), (a, a.flip(0), 2), (a, b, 1), (a, a.flip(0), 6)]
    for _ in range(3):
        x = 20 * torch.rand(512, generator=g)
        cases.append((x, x + 6 * torch.rand(512, generator=g), 25))
    for x, y, k in cases:
        want = M.topk_jaccard(x, y, k)
        cx, cy = x.clone(), y.clone()
        got = float(topk_jaccard(x, y, k))
        _unchanged(cx, x, "acts_a")
        _unchanged(cy, y, "acts_b")
        if not math.isclose(got, want, abs_tol=1e-6):
            shared = len(M.topk_features(x, k) & M.topk_features(y, k))
            hint = (" (that is the shared fraction |A & B| / k; Jaccard divides by the size of the union)"
                    if math.isclose(got, shared / k, abs_tol=1e-6) else "")
            raise ExerciseFailed(f"k={k}: expected {want:.3f}, got {got:.3f}{hint}; the top-k are the INDICES of the k "
                                 "features with the LARGEST mean activation")


@check
def check_disrupted_features(disrupted_features) -> None:
    """disrupted_features(freq_base, freq_tuned, threshold, min_freq) -> bool mask of shifted features."""
    fb = torch.tensor([0.10, 0.10, 0.20, 0.0, 0.0005, 0.5, 0.5, 0.02])
    ft = torch.tensor([0.104, 0.12, 0.0, 0.01, 0.0009, 0.53125, 0.46875, 0.0])
    cases = [("hand-made frequencies", fb, ft, 0.05, 1e-3),
             ("a shift exactly at the threshold (strictly more than counts)", fb, ft, 0.0625, 1e-3),
             ("a larger threshold", fb, ft, 0.5, 1e-3),
             ("no minimum frequency", fb, ft, 0.05, 0.0)]
    g = _gen(7)
    for i in range(2):
        base = torch.rand(512, generator=g) ** 3
        tuned = (base * (1 + 0.2 * torch.randn(512, generator=g))).clamp(0, 1)
        tuned[:20] = 0.0
        cases.append((f"512 random features (#{i})", base, tuned, 0.1, 1e-3))
    for what, b, t, th, mf in cases:
        want = M.disrupted_features(b, t, th, relative=True, min_freq=mf)
        cb, ct = b.clone(), t.clone()
        got = disrupted_features(b, t, th, mf)
        _unchanged(cb, b, "freq_base")
        _unchanged(ct, t, "freq_tuned")
        if not isinstance(got, torch.Tensor) or got.dtype != torch.bool or got.shape != want.shape:
            raise ExerciseFailed(f"{what}: return a boolean mask of shape {tuple(want.shape)}")
        if not torch.equal(got, want):
            i = int((got != want).nonzero()[0])
            raise ExerciseFailed(f"{what}, threshold {th}: feature {i} (base {float(b[i]):.4g}, tuned "
                                 f"{float(t[i]):.4g}) should be {bool(want[i])}: disrupted means |f_t - f_b| > "
                                 "threshold * f_b (relative), among features firing on >= min_freq of tokens in "
                                 "EITHER model (born and dead features count)")


@check
def check_feature_reward_correlation(feature_reward_correlation) -> None:
    """feature_reward_correlation(feats [n, d], rewards [n]) -> Pearson r per feature, 0 if constant."""
    g = _gen(8)
    n = 40
    r = 2 * torch.rand(n, generator=g) - 1                        # rewards in [-1, 1]
    noise = torch.rand(n, 6, generator=g)
    feats = torch.stack([3 * r + 1, -0.5 * r + 2, noise[:, 0], torch.full((n,), 0.7), torch.zeros(n),
                         r.clamp_min(0) + 0.1 * noise[:, 1]], dim=1)
    sq = torch.rand(n, n, generator=g) ** 2 + 0.5 * r[:, None] * torch.linspace(-1, 1, n)
    cases = [("40 documents x 40 features", sq, r),
             ("hand-made features", feats, r),
             ("rewards shifted and scaled", feats, 5 * r - 3),
             ("64 random features", torch.rand(n, 64, generator=g) ** 2, r),
             ("constant rewards (no evidence for any feature: all 0)", feats, torch.full((n,), 0.5))]
    for what, f, y in cases:
        want = M.feature_reward_correlation(f, y)
        cf, cy = f.clone(), y.clone()
        got = feature_reward_correlation(f, y)
        _unchanged(cf, f, "feature_acts")
        _unchanged(cy, y, "rewards")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"{what}: return one correlation per feature, shape {tuple(want.shape)}")
        if torch.isnan(got).any():
            raise ExerciseFailed(f"{what}: a feature that never varies gave NaN; return 0 for it (no evidence)")
        if not torch.allclose(got.float(), want, atol=1e-4):
            fc, yc = f.double() - f.double().mean(1)[None, :], y.double() - y.double().mean()
            wrong_axis = (fc * yc[:, None]).sum(0) / (fc.norm(dim=0) * yc.norm()).clamp_min(1e-300)
            if f.shape[0] == f.shape[1] and torch.allclose(got.double(), wrong_axis, atol=1e-4):
                raise ExerciseFailed(f"{what}: you centred each feature by a mean over FEATURES; centre over "
                                     "documents, feature_acts.mean(0) (dim 0 is the document axis)")
            n_ = len(y)
            if torch.allclose(got.double() * n_ / (n_ - 1), want.double(), atol=1e-4):
                raise ExerciseFailed(f"{what}: every correlation is (n-1)/n of the right one: the covariance and "
                                     "the standard deviations must use the same normalisation (or use norms of the "
                                     "centred vectors)")
            i = int((got.float() - want).abs().argmax())
            raise ExerciseFailed(f"{what}: feature {i}: expected r = {float(want[i]):.4f}, got {float(got[i]):.4f} "
                                 "(Pearson: centre both, divide the covariance by both standard deviations; "
                                 "negative correlations stay negative)")


CHECKS = {
    "effective_rank": check_effective_rank,
    "top1_energy": check_top1_energy,
    "rank_k_approx": check_rank_k_approx,
    "direction_alignment": check_direction_alignment,
    "weight_deltas": check_weight_deltas,
    "rank_k_model": check_rank_k_model,
    "recovery_curve": check_recovery_curve,
    "random_delta_like": check_random_delta_like,
    "topk_jaccard": check_topk_jaccard,
    "disrupted_features": check_disrupted_features,
    "feature_reward_correlation": check_feature_reward_correlation,
}


# ------------------------------------------------------------------ plausible mistakes
def _erank_unsquared(dW):
    s = torch.linalg.svdvals(dW.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _erank_entropy_only(dW):
    s = torch.linalg.svdvals(dW.double())
    p = s ** 2 / (s ** 2).sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def _erank_matrix_rank(dW):
    return float(torch.linalg.matrix_rank(dW.double()))


def _top1_unsquared(dW):
    s = torch.linalg.svdvals(dW.double())
    return 0.0 if s.sum() == 0 else float(s[0] / s.sum())


def _top1_smallest(dW):
    s = torch.linalg.svdvals(dW.double())
    return 0.0 if s.sum() == 0 else float(s[-1] ** 2 / (s ** 2).sum())


def _top1_largest_entry(dW):
    d = dW.double()
    return 0.0 if d.norm() == 0 else float(d.abs().max() ** 2 / d.norm() ** 2)


def _erank_mixed_base(dW):
    s = torch.linalg.svdvals(dW.double())
    p = s ** 2 / (s ** 2).sum()
    p = p[p > 0]
    return float(2 ** -(p * p.log()).sum())          # natural-log entropy, base-2 exponential


def _erank_nan_zeros(dW):
    s = torch.linalg.svdvals(dW.double())
    if s.sum() == 0:
        return 0.0
    p = s ** 2 / (s ** 2).sum()
    return float(torch.exp(-(p * p.log()).sum()))    # 0 * log 0 = NaN for zero singular values


def _top1_norm_ratio(dW):
    s = torch.linalg.svdvals(dW.double())
    return 0.0 if s.sum() == 0 else float(s[0] / s.norm())


def _rank_k_without_s(dW, k):
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    return U[:, :k] @ Vh[:k]


def _rank_k_smallest(dW, k):
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    return (U[:, -k:] * S[-k:]) @ Vh[-k:]


def _rank_k_in_place(dW, k):
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    dW.copy_((U[:, :k] * S[:k]) @ Vh[:k])
    return dW


def _rank_k_torch_svd_v(dW, k):
    U, S, V = torch.svd(dW)                      # torch.svd returns V, not V^T
    return (U[:, :k] * S[:k]) @ V[:k]


def _align_no_abs(dA, dB, k=5):
    Ua = torch.linalg.svd(dA.double(), full_matrices=False)[0][:, :k]
    Ub = torch.linalg.svd(dB.double(), full_matrices=False)[0][:, :k]
    return float((Ua.T @ Ub).max(dim=1).values.mean())


def _align_right_vectors(dA, dB, k=5):
    Va = torch.linalg.svd(dA.double(), full_matrices=False)[2][:k]
    Vb = torch.linalg.svd(dB.double(), full_matrices=False)[2][:k]
    return float((Va @ Vb.T).abs().max(dim=1).values.mean())


def _align_mean_all(dA, dB, k=5):
    Ua = torch.linalg.svd(dA.double(), full_matrices=False)[0][:, :k]
    Ub = torch.linalg.svd(dB.double(), full_matrices=False)[0][:, :k]
    return float((Ua.T @ Ub).abs().mean())


def _align_best_match_in_a(dA, dB, k=5):
    Ua = torch.linalg.svd(dA.double(), full_matrices=False)[0][:, :k]
    Ub = torch.linalg.svd(dB.double(), full_matrices=False)[0][:, :k]
    return float((Ua.T @ Ub).abs().max(dim=0).values.mean())    # max over the wrong axis


def _align_rows_of_u(dA, dB, k=5):
    Ua = torch.linalg.svd(dA.double(), full_matrices=False)[0][:k]
    Ub = torch.linalg.svd(dB.double(), full_matrices=False)[0][:k]
    return float((Ua @ Ub.T).abs().max(dim=1).values.mean())     # rows of U, not its columns


def _deltas_reversed(base, tuned):
    b = dict(base.named_parameters())
    return {n: (b[n] - p).detach() for n, p in tuned.named_parameters()}


def _deltas_2d_only(base, tuned):
    b = dict(base.named_parameters())
    return {n: (p - b[n]).detach() for n, p in tuned.named_parameters() if p.ndim == 2}


def _deltas_keep_grad(base, tuned):
    b = dict(base.named_parameters())
    return {n: p - b[n] for n, p in tuned.named_parameters()}


def _deltas_in_place(base, tuned):
    b = dict(base.named_parameters())
    return {n: p.data.sub_(b[n].data) for n, p in tuned.named_parameters()}


def _rank_k_model_in_place(base, deltas, k):
    with torch.no_grad():
        for n, p in base.named_parameters():
            if deltas[n].ndim == 2:
                p.add_(M.truncate_rank(deltas[n], k))
    return base


def _rank_k_model_shallow_copy(base, deltas, k):
    model = copy.copy(base)                      # a shallow copy shares base's parameter tensors
    with torch.no_grad():
        for n, p in model.named_parameters():
            if deltas[n].ndim == 2:
                p.add_(deltas[n] if k is None else M.truncate_rank(deltas[n], k))
    return model


def _rank_k_model_with_1d(base, deltas, k):
    return A.rebuilt_model(base, deltas, k, keep_1d=True)


def _rank_k_model_ignores_k(base, deltas, k):
    return A.rebuilt_model(base, deltas, None)


def _recovery_clipped(score_fn, base, deltas, ks, score_base, score_tuned, build):
    out = A.recovery_curve(score_fn, base, deltas, ks, score_base, score_tuned, build)
    return [x if math.isnan(x) else min(1.0, max(0.0, x)) for x in out]


def _recovery_no_baseline(score_fn, base, deltas, ks, score_base, score_tuned, build):
    return [float(score_fn(build(base, deltas, k))) / score_tuned for k in ks]


def _recovery_zero_gap_is_zero(score_fn, base, deltas, ks, score_base, score_tuned, build):
    out = A.recovery_curve(score_fn, base, deltas, ks, score_base, score_tuned, build)
    return [0.0 if math.isnan(x) else x for x in out]


def _recovery_full_model_each_k(score_fn, base, deltas, ks, score_base, score_tuned, build):
    out = []
    for k in ks:
        build(base, deltas, k)
        s = float(score_fn(build(base, deltas, None)))
        out.append((s - score_base) / (score_tuned - score_base) if score_tuned != score_base else float("nan"))
    return out


def _recovery_zeroes_1d_deltas(score_fn, base, deltas, ks, score_base, score_tuned, build):
    for d in deltas.values():
        if d.ndim == 1:
            d.zero_()            # "rank-k models keep 1-D parameters at base", written into the caller's deltas
    return A.recovery_curve(score_fn, base, deltas, ks, score_base, score_tuned, build)


def _null_gaussian_norm_matched(dW, generator):
    x = torch.randn(dW.shape, generator=generator, dtype=torch.float64)
    return (x * dW.double().norm() / x.norm()).to(dW.dtype)


def _null_shuffled_entries(dW, generator):
    flat = dW.flatten()
    return flat[torch.randperm(flat.numel(), generator=generator)].reshape(dW.shape).clone()


def _null_global_rng(dW, generator):
    return M.random_delta_like(dW, torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31, (1,)))))


def _null_negated(dW, generator):
    return -dW.clone()


def _null_left_only(dW, generator):
    d = dW.double()
    U, S, Vh = torch.linalg.svd(d, full_matrices=False)
    r = int((S > S.max() * 1e-10).sum())
    Q, _ = torch.linalg.qr(torch.randn(d.shape[0], r, generator=generator, dtype=torch.float64))
    return ((Q * S[:r]) @ Vh[:r]).to(dW.dtype)      # V kept: only one side randomised


def _null_right_only(dW, generator):
    d = dW.double()
    U, S, Vh = torch.linalg.svd(d, full_matrices=False)
    r = int((S > S.max() * 1e-10).sum())
    Q, _ = torch.linalg.qr(torch.randn(d.shape[1], r, generator=generator, dtype=torch.float64))
    return ((U[:, :r] * S[:r]) @ Q.T).to(dW.dtype)  # U kept: only one side randomised


def _null_uniform_directions(dW, generator):
    d = dW.double()
    if d.ndim == 1:
        v = torch.rand(d.shape, generator=generator, dtype=torch.float64)
        return (v * d.norm() / v.norm()).to(dW.dtype)
    S = torch.linalg.svdvals(d)
    r = int((S > S.max() * 1e-10).sum())
    U, _ = torch.linalg.qr(torch.rand(d.shape[0], r, generator=generator, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.rand(d.shape[1], r, generator=generator, dtype=torch.float64))
    U, V = U * U[0].sign(), V * V[0].sign()        # "tidy" signs: every direction in one orthant
    return ((U * S[:r]) @ V.T).to(dW.dtype)


def _null_float64(dW, generator):
    return M.random_delta_like(dW.double(), generator)


def _overlap_fraction(a, b, k):
    return len(set(torch.topk(a, k).indices.tolist()) & set(torch.topk(b, k).indices.tolist())) / k


def _bottom_k_jaccard(a, b, k):
    A_, B_ = set(torch.topk(-a, k).indices.tolist()), set(torch.topk(-b, k).indices.tolist())
    return len(A_ & B_) / len(A_ | B_)


def _jaccard_of_values(a, b, k):
    A_, B_ = set(torch.topk(a, k).values.tolist()), set(torch.topk(b, k).values.tolist())
    return len(A_ & B_) / len(A_ | B_)


def _jaccard_over_2k(a, b, k):
    A_, B_ = set(torch.topk(a, k).indices.tolist()), set(torch.topk(b, k).indices.tolist())
    return len(A_ & B_) / (2 * k)                    # the union is not 2k when they overlap


def _disrupted_absolute(fb, ft, threshold=0.05, min_freq=1e-3):
    return M.disrupted_features(fb, ft, threshold, relative=False)


def _disrupted_no_min_freq(fb, ft, threshold=0.05, min_freq=1e-3):
    return (ft - fb).abs() > threshold * fb


def _disrupted_at_least(fb, ft, threshold=0.05, min_freq=1e-3):
    alive = torch.maximum(fb, ft) >= min_freq
    return alive & ((ft - fb).abs() >= threshold * fb)


def _disrupted_base_alive_only(fb, ft, threshold=0.05, min_freq=1e-3):
    return (fb >= min_freq) & ((ft - fb).abs() > threshold * fb)


def _corr_centre_wrong_axis(f, r):
    fc, rc = f - f.mean(-1), r - r.mean()     # mean over features instead of documents
    denom = fc.norm(dim=0) * rc.norm()
    return torch.where(denom > 0, (fc * rc[:, None]).sum(0) / denom.clamp_min(1e-12), torch.zeros_like(denom))


def _corr_mixed_ddof(f, r):
    fc, rc = f - f.mean(0), r - r.mean()
    cov = (fc * rc[:, None]).sum(0) / len(r)                  # biased covariance ...
    sd = f.std(0) * r.std()                                   # ... over unbiased standard deviations
    return torch.where(sd > 0, cov / sd.clamp_min(1e-12), torch.zeros_like(sd))


def _corr_covariance(f, r):
    return ((f - f.mean(0)) * (r - r.mean())[:, None]).mean(0)


def _corr_nan_constant(f, r):
    fc, rc = f - f.mean(0), r - r.mean()
    return (fc * rc[:, None]).sum(0) / (fc.norm(dim=0) * rc.norm())


def _corr_clamped(f, r):
    return M.feature_reward_correlation(f, r).clamp(0, 1)


def _corr_cosine(f, r):
    out = (f * r[:, None]).sum(0) / (f.norm(dim=0) * r.norm()).clamp_min(1e-12)
    return torch.where(f.norm(dim=0) > 0, out, torch.zeros_like(out))


WRONG_ANSWERS = {
    "effective_rank": [_erank_unsquared, _erank_entropy_only, _erank_matrix_rank, _erank_mixed_base,
                       _erank_nan_zeros],
    "top1_energy": [_top1_unsquared, _top1_smallest, _top1_largest_entry, _top1_norm_ratio],
    "rank_k_approx": [_rank_k_without_s, _rank_k_smallest, _rank_k_in_place, _rank_k_torch_svd_v],
    "direction_alignment": [_align_no_abs, _align_right_vectors, _align_mean_all, _align_best_match_in_a,
                            _align_rows_of_u],
    "weight_deltas": [_deltas_reversed, _deltas_2d_only, _deltas_keep_grad, _deltas_in_place],
    "rank_k_model": [_rank_k_model_in_place, _rank_k_model_with_1d, _rank_k_model_ignores_k,
                     _rank_k_model_shallow_copy],
    "recovery_curve": [_recovery_clipped, _recovery_no_baseline, _recovery_zero_gap_is_zero,
                       _recovery_full_model_each_k, _recovery_zeroes_1d_deltas],
    "random_delta_like": [_null_gaussian_norm_matched, _null_shuffled_entries, _null_global_rng, _null_negated,
                          _null_left_only, _null_right_only, _null_uniform_directions, _null_float64],
    "topk_jaccard": [_overlap_fraction, _bottom_k_jaccard, _jaccard_of_values, _jaccard_over_2k],
    "disrupted_features": [_disrupted_absolute, _disrupted_no_min_freq, _disrupted_at_least,
                           _disrupted_base_alive_only],
    "feature_reward_correlation": [_corr_covariance, _corr_nan_constant, _corr_clamped, _corr_cosine,
                                   _corr_centre_wrong_axis, _corr_mixed_ddof],
}
