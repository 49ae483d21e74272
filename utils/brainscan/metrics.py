"""The brain-scan metrics, each a pure function of tensors (unit-tested on known matrices).

Weight deltas (dW = W_tuned - W_base, one per weight matrix):
- `effective_rank_energy`: the definition the source used. p_i = s_i^2 / sum_j s_j^2
  over the singular values of dW; erank = exp(-sum_i p_i log p_i).
- `effective_rank_roy_vetterli`: the classic definition (Roy & Vetterli 2007), with
  p_i = s_i / sum_j s_j. For the same matrix it is never smaller than the energy one
  (squaring concentrates the distribution), so the two are not comparable across papers.
- `top1_energy`: s_1^2 / sum_j s_j^2, the share of the squared Frobenius norm in the top direction.
- `direction_alignment`: mean over the top-k left singular vectors u_i of A of
  max_j |u_i . u_j| over the top-k of B (1 = B contains A's directions, ~sqrt(2 log k / d) for random).
- `truncate_rank`: the best rank-k approximation U_k S_k V_k^T (Eckart-Young).
- `spectrum`: every singular value and the top-k factor U_k diag(s_k) of dW, the two things the
  analyses need, from ONE eigendecomposition of the Gram matrix of dW's smaller side.
`truncate_rank`, `direction_alignment` and `spectrum` never take a full SVD of dW: GPT-2's
token-embedding delta is 50257 x 768, whose full SVD costs ~7 s on one core, while its
768 x 768 Gram matrix costs ~1 s. For the top directions this is exact (the same subspaces as the
SVD, to floating-point error); singular values below ~sqrt(min(m, n) * eps) of the largest
(~4e-7 for GPT-2, under the float32 resolution of a delta) read as 0.
All of these are invariant to rescaling dW except the norm itself: a norm-matched
control therefore matters for the behavioural and feature metrics, not for the ranks.

Behaviour: `recovery_fraction` = (score_k - score_base) / (score_full - score_base).

SAE features:
- `topk_jaccard`: |top-k(a) & top-k(b)| / |top-k(a) | top-k(b)| of two mean-pooled
  feature-activation vectors.
- `firing_frequency`, `disrupted_features`: the count of features whose firing frequency
  changes by more than `threshold`, relative to the base frequency by default.

Intervals over seeds: `utils.stats` (`seed_interval`, `seed_summary`, `intervals_separate`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from utils.core import CourseError, torch_threads


def matrix_with_singular_values(s: Sequence[float], m: int, n: int, seed: int = 0) -> Tensor:
    """A random m x n float64 matrix whose singular values are exactly `s` (a known answer for
    testing rank metrics)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    S = torch.zeros(m, n, dtype=torch.float64)
    for i, v in enumerate(s):
        S[i, i] = v
    return U @ S @ V.T


def _matrix(dW: Tensor, name: str = "dW") -> Tensor:
    if not isinstance(dW, Tensor) or dW.ndim != 2:
        raise CourseError(f"{name} must be a 2-D tensor (a weight matrix), got "
                          f"{getattr(dW, 'shape', type(dW).__name__)}")
    return dW.detach().double()


def singular_values(dW: Tensor) -> Tensor:
    # one thread: on a busy 2-core machine a multi-threaded LAPACK SVD of a small matrix can be 50x slower
    with torch_threads(1):
        return torch.linalg.svdvals(_matrix(dW))


def _entropy_rank(p: Tensor) -> float:
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def effective_rank_energy(dW: Tensor) -> float:
    """exp(entropy) of p_i = s_i^2 / sum s_j^2 (the source's definition). 0 for a zero matrix."""
    s = singular_values(dW)
    total = (s ** 2).sum()
    return 0.0 if total == 0 else _entropy_rank(s ** 2 / total)


def effective_rank_roy_vetterli(dW: Tensor) -> float:
    """exp(entropy) of p_i = s_i / sum s_j (Roy & Vetterli's classic definition). 0 for a zero matrix."""
    s = singular_values(dW)
    total = s.sum()
    return 0.0 if total == 0 else _entropy_rank(s / total)


def top1_energy(dW: Tensor) -> float:
    """s_1^2 / sum s_j^2: the fraction of the squared Frobenius norm in the top singular direction."""
    s = singular_values(dW)
    total = (s ** 2).sum()
    return 0.0 if total == 0 else float(s[0] ** 2 / total)


def _gram_eig(M: Tensor) -> tuple[Tensor, Tensor, bool]:
    """The eigendecomposition of the Gram matrix of M's SMALLER side, in descending order:
    (s^2, vectors, left). left=True (m < n): the vectors are M's left singular vectors (of M M^T);
    left=False (m >= n): its right singular vectors (of M^T M). Eigenvalues below
    min(m, n) * eps * the largest (rounding noise of the Gram matrix) are set to 0."""
    m, n = M.shape
    left = m < n
    with torch_threads(1):
        G = M @ M.T if left else M.T @ M
        evals, vecs = torch.linalg.eigh(G)
    evals, vecs = evals.flip(0), vecs.flip(1)
    if evals.numel():
        evals = torch.where(evals > min(m, n) * torch.finfo(evals.dtype).eps * evals[0].clamp_min(0),
                            evals, torch.zeros_like(evals))
    return evals, vecs, left


def spectrum(dW: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    """(s, top) of a 2-D delta: s, ALL its singular values (float64, descending: min(m, n) of
    them), and top = U_k diag(s_k) [m, k], its top-k left singular vectors scaled by their
    singular values (k capped at min(m, n)). From one Gram eigendecomposition, never a full SVD.

    `top` is the compact stand-in for dW in the direction analyses: its SVD has the same top-k
    left singular vectors and singular values as dW's, so `direction_alignment(top_a, top_b, k)`
    equals `direction_alignment(dW_a, dW_b, k)` (tested) whenever both ranks are at least k
    (beyond its rank a matrix's singular directions are arbitrary: its columns there are 0), and a
    metric of the singular values alone can be given `torch.diag(s)`, a matrix with exactly dW's
    singular values."""
    M = _matrix(dW)
    evals, vecs, left = _gram_eig(M)
    s = evals.sqrt()
    k = min(k, s.numel())
    top = vecs[:, :k] * s[:k] if left else M @ vecs[:, :k]
    return s, top


def truncate_rank(dW: Tensor, k: int | None) -> Tensor:
    """U_k S_k V_k^T, the best rank-k approximation of dW (k=None or k >= rank: dW itself), as
    the projection of dW on its top-k singular subspace (from the Gram matrix of its smaller side:
    P_k P_k^T dW or dW P_k P_k^T), which is the same matrix without a full SVD."""
    M = _matrix(dW)
    if k is None or k >= min(M.shape):
        return dW.detach().clone()
    if k < 0:
        raise CourseError(f"k must be >= 0 (or None for full rank), got {k}")
    if k == 0:
        return torch.zeros_like(dW)
    _, vecs, left = _gram_eig(M)
    P = vecs[:, :k]
    with torch_threads(1):
        out = P @ (P.T @ M) if left else (M @ P) @ P.T
    return out.to(dW.dtype)


def top_left_singular_vectors(dW: Tensor, k: int) -> Tensor:
    """The top-k left singular vectors of dW [m, k], from its Gram matrix. If dW's rank is below
    k, directions rank+1..k are arbitrary in ANY SVD (their singular value is 0): then the full SVD
    is taken, so such a matrix gets the same (arbitrary but unit) vectors as before."""
    s, top = spectrum(dW, k)
    sk = s[:top.shape[1]]
    if bool((sk <= 0).any()):
        with torch_threads(1):
            return torch.linalg.svd(_matrix(dW), full_matrices=False)[0][:, :top.shape[1]]
    return top / sk


def direction_alignment(dA: Tensor, dB: Tensor, k: int = 5) -> float:
    """mean_i max_j |u_i^A . u_j^B| over the top-k left singular vectors of two deltas of one matrix."""
    if dA.shape != dB.shape:
        raise CourseError(f"direction_alignment needs deltas of the same matrix, got shapes {tuple(dA.shape)} and {tuple(dB.shape)}")
    if k <= 0:
        raise CourseError(f"k must be positive, got {k}")
    k = min(k, min(dA.shape))
    Ua, Ub = top_left_singular_vectors(dA, k), top_left_singular_vectors(dB, k)
    return float((Ua.T @ Ub).abs().max(dim=1).values.mean())


def recovery_fraction(score_k: float, score_base: float, score_full: float) -> float:
    """Share of the base -> tuned change in a behavioural score that the rank-k model reproduces."""
    gap = score_full - score_base
    if gap == 0:
        return float("nan")
    return float((score_k - score_base) / gap)


def topk_features(acts: Tensor, k: int) -> set[int]:
    if acts.ndim != 1:
        raise CourseError(f"expected a 1-D vector of mean feature activations, got shape {tuple(acts.shape)}")
    if not 0 < k <= acts.numel():
        raise CourseError(f"k must be in [1, {acts.numel()}], got {k}")
    return set(torch.topk(acts.detach().float(), k).indices.tolist())


def topk_jaccard(acts_a: Tensor, acts_b: Tensor, k: int) -> float:
    """Jaccard index of the top-k features (by mean-pooled activation) of two models."""
    if acts_a.shape != acts_b.shape:
        raise CourseError(f"feature vectors differ in shape: {tuple(acts_a.shape)} vs {tuple(acts_b.shape)}")
    a, b = topk_features(acts_a, k), topk_features(acts_b, k)
    return len(a & b) / len(a | b)


def firing_frequency(feature_acts: Tensor) -> Tensor:
    """Fraction of tokens on which each feature is active (> 0): [n_tokens, d_sae] -> [d_sae]."""
    if feature_acts.ndim != 2:
        raise CourseError(f"expected feature activations [n_tokens, d_sae], got shape {tuple(feature_acts.shape)}")
    return (feature_acts > 0).float().mean(0)


def disrupted_features(freq_base: Tensor, freq_tuned: Tensor, threshold: float = 0.05, relative: bool = True,
                       min_freq: float = 1e-3) -> Tensor:
    """Boolean mask of features whose firing frequency moved by more than `threshold`.

    relative=True (the default this course uses): |f_t - f_b| > threshold * f_b, among features
    that fire on at least `min_freq` of tokens in either model (a feature that is born or dies
    counts). relative=False: |f_t - f_b| > threshold in absolute frequency."""
    if freq_base.shape != freq_tuned.shape:
        raise CourseError(f"frequency vectors differ in shape: {tuple(freq_base.shape)} vs {tuple(freq_tuned.shape)}")
    if threshold < 0:
        raise CourseError(f"threshold must be >= 0, got {threshold}")
    diff = (freq_tuned - freq_base).abs()
    if not relative:
        return diff > threshold
    alive = torch.maximum(freq_base, freq_tuned) >= min_freq
    return alive & (diff > threshold * freq_base)


def random_delta_like(dW: Tensor, generator: torch.Generator) -> Tensor:
    """The null delta for `dW`: the same singular values (so the same Frobenius norm, rank and
    effective rank) in random singular directions, U_r diag(s) V_r^T with U_r, V_r random
    orthonormal columns drawn from `generator` (never the global one). A 1-D delta (bias,
    LayerNorm) gets a random direction with the same norm. Returns dW's dtype; dW is not changed."""
    if not isinstance(dW, Tensor) or dW.ndim not in (1, 2):
        raise CourseError(f"expected a 1-D or 2-D delta, got {getattr(dW, 'shape', type(dW).__name__)}")
    d = dW.detach().double()
    if d.ndim == 1:
        v = torch.randn(d.shape, generator=generator, dtype=torch.float64)
        return (v * d.norm() / v.norm()).to(dW.dtype)
    s = singular_values(d)
    r = int((s > s.max() * 1e-10).sum()) if s.numel() and float(s.max()) > 0 else 0
    if r == 0:
        return torch.zeros_like(dW)
    m, n = d.shape
    with torch_threads(1):
        U, _ = torch.linalg.qr(torch.randn(m, r, generator=generator, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(n, r, generator=generator, dtype=torch.float64))
    return ((U * s[:r]) @ V.T).to(dW.dtype)


def feature_reward_correlation(feature_acts: Tensor, rewards: Tensor) -> Tensor:
    """Per SAE feature, the Pearson correlation across documents between its (mean-pooled)
    activation and the document's reward: [n_docs, d_sae], [n_docs] -> [d_sae] in [-1, 1].
    A feature that never varies gets 0 (no evidence), not NaN. Inputs are not changed."""
    if feature_acts.ndim != 2 or rewards.ndim != 1 or feature_acts.shape[0] != rewards.shape[0]:
        raise CourseError(f"expected feature activations [n_docs, d_sae] and rewards [n_docs], got "
                          f"{tuple(feature_acts.shape)} and {tuple(rewards.shape)}")
    if feature_acts.shape[0] < 2:
        raise CourseError("a correlation needs at least 2 documents")
    x = feature_acts.detach().double()
    y = rewards.detach().double()
    xc, yc = x - x.mean(0), y - y.mean()
    denom = xc.norm(dim=0) * yc.norm()
    corr = (xc * yc[:, None]).sum(0) / denom.clamp_min(1e-300)
    return torch.where(denom > 1e-12, corr, torch.zeros_like(corr)).float()
