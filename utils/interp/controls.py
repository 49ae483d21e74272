"""Specificity controls for a direction or subspace claim ("the X direction", "the X subspace").

An isotropic random direction of equal norm is a floor, not a control: almost any structured
direction beats it, because activations are anisotropic. A claim that a direction or subspace
found by a method *for variable X* matters must beat the same method when X is not there:

(a) `variance_matched_random`: random directions drawn from the activations' own covariance
    (so they point where the activations vary, as the claim's direction does);
(b) the same method fitted on SHUFFLED labels (`shuffled_labels`);
(c) the same method fitted for a correlated NUISANCE variable the chapter names;
(d) the top principal components of equal rank (`top_pcs`): reported beside the claim, because a
    method that just finds the high-variance subspace is not specific to X.

`specificity_controls` builds (a)-(d) from one fitting function; `specificity_verdict` decides
the claim over seeds: held only if it beats (a)-(c) ((d) is reported, and also required when
`require_pcs=True`); the isotropic floor alone never makes a row held.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import Tensor

from utils.core import CourseError
from utils.stats import HELD, Interval, ordering_verdict

VARIANCE_MATCHED = "variance-matched random"
SHUFFLED = "shuffled labels"
TOP_PCS = "top principal components"


def _acts(acts: Tensor) -> Tensor:
    if not isinstance(acts, Tensor) or acts.ndim != 2 or acts.shape[0] < 2:
        shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        raise CourseError(f"activations must be a [n >= 2, d] tensor, got {shape}")
    if not torch.isfinite(acts).all():
        raise CourseError("activations contain NaN or inf")
    return acts.detach().double()


def _rank(rank: int, d: int) -> int:
    if int(rank) != rank or not 1 <= rank <= d:
        raise CourseError(f"rank must be an integer in [1, {d}], got {rank}")
    return int(rank)


def orthonormal(basis: Tensor) -> Tensor:
    """An orthonormal basis [d, k] of the span of the columns of `basis` ([d] is one direction)."""
    b = basis[:, None] if basis.ndim == 1 else basis
    q, r = torch.linalg.qr(b.double())
    if (r.diagonal().abs() < 1e-10).any():
        raise CourseError("the basis is rank-deficient: its columns are linearly dependent")
    return q.to(basis.dtype)


def top_pcs(acts: Tensor, rank: int) -> Tensor:
    """The top `rank` principal directions of the centred activations, as an orthonormal [d, rank]."""
    x = _acts(acts)
    rank = _rank(rank, x.shape[1])
    _, _, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return vh[:rank].T.contiguous().to(acts.dtype)


def variance_matched_random(acts: Tensor, rank: int, seed: int) -> Tensor:
    """A random subspace drawn from the activations' own covariance: Sigma^(1/2) g for Gaussian g,
    orthonormalised, [d, rank]. For one direction (rank 1), rescale it to the claim's norm.

    Unlike an isotropic random direction, it points where the activations vary, so it tests
    whether the claim's subspace is special beyond "lies in the high-variance part"."""
    x = _acts(acts)
    rank = _rank(rank, x.shape[1])
    xc = x - x.mean(0)
    # Sigma^(1/2) g == V S V^T g / sqrt(n - 1), from the SVD of the centred data (no d x d eig needed)
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    g = torch.randn(vh.shape[1], rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    draw = vh.T @ (s[:, None] / (len(x) - 1) ** 0.5 * (vh @ g))
    return orthonormal(draw).to(acts.dtype)


def shuffled_labels(labels: Tensor, seed: int) -> Tensor:
    """The labels permuted by `seed` (a fresh generator; the global RNG is untouched)."""
    labels = torch.as_tensor(labels)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return labels[perm]


def specificity_controls(fit: Callable[[Tensor, Tensor], Tensor], acts: Tensor, labels: Tensor, *, seed: int,
                         nuisance: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The claim's subspace and its controls, each an orthonormal [d, k] basis of the same rank k:
    {"claim", "variance-matched random", "shuffled labels", "nuisance: <name>" for each nuisance,
    "top principal components"}.

    fit(acts, labels) -> [d] or [d, k]: the method that finds the claim's direction / subspace
    (mean difference, probe weights, a rank-k regression, ...), called again on shuffled labels
    and on each nuisance variable."""
    x = acts.detach()
    claim = orthonormal(fit(x, labels))
    k = claim.shape[1]
    out = {"claim": claim,
           VARIANCE_MATCHED: variance_matched_random(x, k, seed),
           SHUFFLED: orthonormal(fit(x, shuffled_labels(labels, seed + 1)))}
    for name, values in (nuisance or {}).items():
        basis = orthonormal(fit(x, torch.as_tensor(values)))
        if basis.shape[1] != k:
            raise CourseError(f"the nuisance fit '{name}' gave rank {basis.shape[1]}, the claim rank {k}")
        out[f"nuisance: {name}"] = basis
    out[TOP_PCS] = top_pcs(x, k).to(claim.dtype)
    for name, b in out.items():
        if b.shape[1] != k:
            raise CourseError(f"control '{name}' has rank {b.shape[1]}, the claim rank {k}: fit must give a fixed rank")
    return out


def specificity_verdict(claim: Interval, controls: Mapping[str, Interval], *, larger: bool = True,
                        require_pcs: bool = False, bounds: tuple[float, float] | None = None) -> tuple[str, list[str]]:
    """(verdict, the controls the claim did not beat). `claim` and `controls` are intervals over
    seeds of the same metric (e.g. fraction of the logit difference recovered by patching the
    subspace). Held only if the claim beats every control except the top PCs (unless
    `require_pcs`) and an isotropic floor named "isotropic random" (reported, never enough).
    The verdict is `ordering_verdict`'s against the required controls."""
    required = {k: v for k, v in controls.items()
                if not k.startswith("isotropic") and (require_pcs or k != TOP_PCS)}
    if not any(k == VARIANCE_MATCHED or k == SHUFFLED or k.startswith("nuisance") for k in required):
        raise CourseError("specificity_verdict needs at least one specific control (variance-matched random, "
                          "shuffled labels or a nuisance variable); an isotropic random direction is only a floor")
    verdict = ordering_verdict(claim, list(required.values()), x_larger=larger, bounds=bounds)
    failed = [k for k, v in required.items()
              if ordering_verdict(claim, [v], x_larger=larger, bounds=bounds) != HELD]
    return verdict, failed


def paired_specificity_verdict(claim, controls: Mapping[str, object], *, larger: bool = True,
                               require_pcs: bool = False) -> tuple[str, list[str], dict[str, Interval]]:
    """`specificity_verdict` for a claim and controls measured on the SAME units: `claim` [n_seeds]
    and each control [n_seeds] are per-training-seed values on the same held-out data (e.g. the gap
    closed by steering along the claim's direction and along each control's, on the same pairs of
    each seed). Each control is decided by the paired difference claim - control over seeds
    (`paired_difference`, unit "seeds"), which removes the seed-to-seed variation both share.

    Returns (verdict, the required controls not beaten, {control: interval of the difference}).
    Held only if every required control's difference is held (the same rules as
    `specificity_verdict`: the isotropic floor is reported, never required; the top PCs only with
    `require_pcs`); 'reversed' if every required difference is reversed; one seed: 'one seed,
    untested'; else 'not separated'."""
    from utils.stats import paired_difference

    required = [k for k in controls if not k.startswith("isotropic") and (require_pcs or k != TOP_PCS)]
    if not any(k == VARIANCE_MATCHED or k == SHUFFLED or k.startswith("nuisance") for k in required):
        raise CourseError("paired_specificity_verdict needs at least one specific control (variance-matched random, "
                          "shuffled labels or a nuisance variable); an isotropic random direction is only a floor")
    claim = [float(v) for v in claim]
    if any(len(vals) != len(claim) for vals in controls.values()):
        raise CourseError(f"every control needs one value per seed, like the claim ({len(claim)})")
    if len(claim) < 2:   # one seed: the difference, no interval (ordering_verdict says 'one seed, untested')
        diffs = {k: (claim[0] - float(vals[0]), math.nan, math.nan) for k, vals in controls.items()}
    else:
        diffs = {k: paired_difference(claim, [float(v) for v in vals], unit="seeds") for k, vals in controls.items()}
    verdicts = {k: ordering_verdict(diffs[k], [(0.0, 0.0, 0.0)], x_larger=larger) for k in required}
    failed = [k for k, v in verdicts.items() if v != HELD]
    values = list(verdicts.values())
    if any(v.startswith("one seed") for v in values):
        verdict = "one seed, untested"
    elif not failed:
        verdict = HELD
    elif all(v == "reversed" for v in values):
        verdict = "reversed"
    else:
        verdict = "not separated"
    return verdict, failed, diffs
