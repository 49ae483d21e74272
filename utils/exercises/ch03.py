"""Checks for chapter 03 (the RLHF brain scan). References: utils.brainscan.metrics."""
from __future__ import annotations

import math

import torch

from utils.brainscan import metrics as M
from utils.exercises import ExerciseFailed, check


def _with_singular_values(s, m, n, seed):
    return M.matrix_with_singular_values(s, m, n, seed).float()


@check
def check_effective_rank(effective_rank) -> None:
    """effective_rank(dW) -> exp(entropy of s_i^2 / sum s_j^2)."""
    cases = [
        ("a rank-1 matrix", _with_singular_values([3.0], 10, 6, 0)),
        ("4 equal singular values", _with_singular_values([2.0] * 4, 10, 6, 1)),
        ("singular values (3, 1)", _with_singular_values([3.0, 1.0], 8, 8, 2)),
        ("a random 16 x 24 matrix", torch.randn(16, 24, generator=torch.Generator().manual_seed(3))),
        ("a scaled random matrix", 1e-3 * torch.randn(12, 5, generator=torch.Generator().manual_seed(4))),
    ]
    for what, A in cases:
        want = M.effective_rank_energy(A)
        got = float(effective_rank(A.clone()))
        if math.isclose(got, M.effective_rank_roy_vetterli(A), rel_tol=1e-4) and not math.isclose(want, got, rel_tol=1e-4):
            raise ExerciseFailed(f"{what}: you used p_i = s_i / sum s_j (the classic Roy-Vetterli definition); "
                                 f"the source's effective rank squares them: p_i = s_i^2 / sum s_j^2")
        if math.isclose(got, math.log(want), rel_tol=1e-4) and not math.isclose(want, got, rel_tol=1e-4):
            raise ExerciseFailed(f"{what}: you returned the entropy; the effective rank is exp(entropy)")
        if not math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6):
            raise ExerciseFailed(f"{what}: expected {want:.4f}, got {got:.4f} (a rank-r matrix with equal singular values "
                                 "should give r)")


@check
def check_rank_k_approx(rank_k_approx) -> None:
    """rank_k_approx(dW, k) -> U_k S_k V_k^T, the best rank-k approximation."""
    A = _with_singular_values([5.0, 3.0, 2.0, 1.0, 0.5], 12, 7, 5)
    for k in (1, 2, 4):
        want = M.truncate_rank(A, k)
        got = rank_k_approx(A.clone(), k)
        if not isinstance(got, torch.Tensor):
            raise ExerciseFailed(f"rank_k_approx should return a tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(A.shape):
            raise ExerciseFailed(f"k={k}: the approximation must have the shape of dW {tuple(A.shape)}, got {tuple(got.shape)}")
        r = int(torch.linalg.matrix_rank(got.double(), atol=1e-4))
        if r != k:
            raise ExerciseFailed(f"k={k}: the result has rank {r}, not {k}")
        if not torch.allclose(got.float(), want.float(), atol=1e-4):
            sv = torch.linalg.svdvals(got.double())[:k]
            hint = ("its singular values are all 1: multiply by S_k" if torch.allclose(sv, torch.ones_like(sv), atol=1e-4)
                    else "keep the k LARGEST singular directions (torch.linalg.svd sorts them in descending order)")
            raise ExerciseFailed(f"k={k}: not the best rank-{k} approximation; {hint}")


@check
def check_topk_jaccard(topk_jaccard) -> None:
    """topk_jaccard(a, b, k) -> |top-k(a) & top-k(b)| / |top-k(a) | top-k(b)|."""
    g = torch.Generator().manual_seed(6)
    a = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    b = torch.tensor([0.0, 4.0, 3.0, 2.0, 1.0, 5.0])
    cases = [(a, a.clone(), 3), (a, b, 3), (a, a.flip(0), 2), (a, b, 1)]
    for _ in range(3):
        x = torch.rand(50, generator=g)
        cases.append((x, x + 0.3 * torch.rand(50, generator=g), 10))
    for x, y, k in cases:
        want = M.topk_jaccard(x, y, k)
        got = float(topk_jaccard(x.clone(), y.clone(), k))
        if not math.isclose(got, want, abs_tol=1e-6):
            shared = len(M.topk_features(x, k) & M.topk_features(y, k))
            hint = (" (that is the shared fraction |A & B| / k; Jaccard divides by the size of the union)"
                    if math.isclose(got, shared / k, abs_tol=1e-6) else "")
            raise ExerciseFailed(f"k={k}: expected {want:.3f}, got {got:.3f}{hint}; the top-k are the k features with the "
                                 "LARGEST mean activation")


CHECKS = {
    "effective_rank": check_effective_rank,
    "rank_k_approx": check_rank_k_approx,
    "topk_jaccard": check_topk_jaccard,
}


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


def _rank_k_without_s(dW, k):
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    return U[:, :k] @ Vh[:k]


def _rank_k_smallest(dW, k):
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    return (U[:, -k:] * S[-k:]) @ Vh[-k:]


def _overlap_fraction(a, b, k):
    return len(set(torch.topk(a, k).indices.tolist()) & set(torch.topk(b, k).indices.tolist())) / k


def _bottom_k_jaccard(a, b, k):
    A, B = set(torch.topk(-a, k).indices.tolist()), set(torch.topk(-b, k).indices.tolist())
    return len(A & B) / len(A | B)


WRONG_ANSWERS = {
    "effective_rank": [_erank_unsquared, _erank_entropy_only],
    "rank_k_approx": [_rank_k_without_s, _rank_k_smallest],
    "topk_jaccard": [_overlap_fraction, _bottom_k_jaccard],
}
