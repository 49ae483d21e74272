"""The brain-scan metrics on matrices and vectors with known answers."""
import math

import pytest
import torch

from utils.brainscan import metrics as M
from utils.core import CourseError
from utils.stats import intervals_separate, seed_interval, seed_summary


def _with_singular_values(s, m=12, n=9, seed=0):
    return M.matrix_with_singular_values(s, m, n, seed)


def test_effective_rank_of_rank_one_and_of_r_equal_directions():
    assert M.effective_rank_energy(_with_singular_values([3.0])) == pytest.approx(1.0)
    assert M.effective_rank_roy_vetterli(_with_singular_values([3.0])) == pytest.approx(1.0)
    for r in (2, 5, 9):
        A = _with_singular_values([2.0] * r)
        assert M.effective_rank_energy(A) == pytest.approx(r, rel=1e-9)
        assert M.effective_rank_roy_vetterli(A) == pytest.approx(r, rel=1e-9)


def test_the_two_definitions_differ_as_computed_by_hand():
    A = _with_singular_values([2.0, 1.0])
    # energy: p = (4/5, 1/5); classic: p = (2/3, 1/3)
    p = torch.tensor([0.8, 0.2], dtype=torch.float64)
    q = torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)
    assert M.effective_rank_energy(A) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert M.effective_rank_roy_vetterli(A) == pytest.approx(float(torch.exp(-(q * q.log()).sum())))
    assert M.effective_rank_energy(A) < M.effective_rank_roy_vetterli(A)


def test_ranks_and_energy_are_scale_invariant_and_zero_matrix_is_zero():
    A = _with_singular_values([5.0, 2.0, 1.0, 0.5])
    for f in (M.effective_rank_energy, M.effective_rank_roy_vetterli, M.top1_energy):
        assert f(7.3 * A) == pytest.approx(f(A))
        assert f(torch.zeros(4, 3)) == 0.0


def test_top1_energy():
    assert M.top1_energy(_with_singular_values([3.0, 1.0, 1.0, 1.0, 1.0, 1.0])) == pytest.approx(9 / 14)
    assert M.top1_energy(torch.eye(4)) == pytest.approx(0.25)


def test_truncate_rank_is_eckart_young():
    A = _with_singular_values([4.0, 3.0, 2.0, 1.0])
    for k in range(5):
        R = M.truncate_rank(A, k)
        assert torch.linalg.matrix_rank(R) == k
        # the error of the best rank-k approximation is the norm of the dropped singular values
        assert float((A - R).norm()) == pytest.approx(math.sqrt(sum(v ** 2 for v in [4.0, 3.0, 2.0, 1.0][k:])), abs=1e-9)
    assert torch.equal(M.truncate_rank(A, None), A)
    assert torch.equal(M.truncate_rank(A, 50), A)
    with pytest.raises(CourseError):
        M.truncate_rank(A, -1)
    with pytest.raises(CourseError):
        M.truncate_rank(torch.ones(3), 1)


def test_direction_alignment_known_cases():
    A = _with_singular_values([5.0, 4.0, 3.0, 2.0, 1.0], m=20, n=10)
    assert M.direction_alignment(A, A, k=5) == pytest.approx(1.0)
    assert M.direction_alignment(A, -3 * A, k=5) == pytest.approx(1.0)   # sign and scale do not matter
    e = torch.eye(20, dtype=torch.float64)
    X = torch.outer(e[0], e[1][:10])            # left direction e0
    Y = torch.outer(e[1], e[1][:10])            # left direction e1, orthogonal
    assert M.direction_alignment(X, Y, k=1) == pytest.approx(0.0, abs=1e-12)
    Z = torch.outer((e[0] + e[1]) / math.sqrt(2), e[2][:10])
    assert M.direction_alignment(X, Z, k=1) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(CourseError):
        M.direction_alignment(A, A.T, k=2)


def test_recovery_fraction():
    assert M.recovery_fraction(0.5, 0.0, 1.0) == 0.5
    assert M.recovery_fraction(-0.2, -1.0, -0.2) == pytest.approx(1.0)
    assert M.recovery_fraction(0.0, 0.0, 1.0) == 0.0
    assert math.isnan(M.recovery_fraction(1.0, 1.0, 1.0))


def test_topk_jaccard():
    a = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    assert M.topk_jaccard(a, a.clone(), 3) == 1.0
    b = torch.tensor([0.0, 4.0, 3.0, 2.0, 1.0, 5.0])   # top-3 {5, 1, 2} vs {0, 1, 2}: 2 shared of 4
    assert M.topk_jaccard(a, b, 3) == pytest.approx(0.5)
    assert M.topk_jaccard(a, a.flip(0), 3) == 0.0
    with pytest.raises(CourseError):
        M.topk_jaccard(a, a, 0)
    with pytest.raises(CourseError):
        M.topk_jaccard(a, a[:5], 2)


def test_firing_frequency_and_disrupted_features():
    acts = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 3.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert torch.equal(M.firing_frequency(acts), torch.tensor([0.75, 0.0, 0.5]))
    fb = torch.tensor([0.10, 0.10, 0.20, 0.0, 0.0005])
    ft = torch.tensor([0.104, 0.12, 0.0, 0.01, 0.0009])
    # relative 5%: +4% no, +20% yes, died yes, born yes, too rare (below min_freq) no
    assert M.disrupted_features(fb, ft, 0.05).tolist() == [False, True, True, True, False]
    # absolute 5 points of frequency: only the feature that died
    assert M.disrupted_features(fb, ft, 0.05, relative=False).tolist() == [False, False, True, False, False]
    with pytest.raises(CourseError):
        M.disrupted_features(fb, ft[:3])


def test_seed_interval_and_separation():
    m, lo, hi = seed_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert lo == pytest.approx(2 * m - hi)
    one = seed_summary([0.7])
    assert one[0] == 0.7 and math.isnan(one[1])
    assert intervals_separate((1, 0.9, 1.1), (2, 1.8, 2.2))
    assert not intervals_separate((1, 0.9, 1.9), (2, 1.8, 2.2))
    assert not intervals_separate(one, (2, 1.8, 2.2))


def test_energy_rank_never_exceeds_classic_rank_and_ranges():
    g = torch.Generator().manual_seed(0)
    for shape in [(8, 8), (20, 5), (3, 40)]:
        A = torch.randn(shape, generator=g, dtype=torch.float64) * torch.rand(shape[1], generator=g, dtype=torch.float64)
        assert 1.0 <= M.effective_rank_energy(A) <= M.effective_rank_roy_vetterli(A) + 1e-9 <= min(shape) + 1e-9
        assert 0.0 < M.top1_energy(A) <= 1.0
        assert 0.0 <= M.direction_alignment(A, torch.randn(shape, generator=g, dtype=torch.float64), 3) <= 1.0 + 1e-9
    a, b = torch.rand(30, generator=g), torch.rand(30, generator=g)
    assert 0.0 <= M.topk_jaccard(a, b, 5) <= 1.0


def test_random_delta_like_keeps_the_spectrum_and_the_global_rng():
    A = _with_singular_values([3.0, 2.0, 0.5], m=30, n=20).float()
    state = torch.get_rng_state()
    R = M.random_delta_like(A, torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())
    assert R.shape == A.shape and R.dtype == A.dtype
    s = torch.linalg.svdvals(R.double())
    assert torch.allclose(s[:3], torch.tensor([3.0, 2.0, 0.5], dtype=torch.float64), atol=1e-5)
    assert float(s[3:].max()) < 1e-5                                  # same rank
    for f in (M.effective_rank_energy, M.effective_rank_roy_vetterli, M.top1_energy):
        assert f(R) == pytest.approx(f(A), rel=1e-4)                    # every rank metric identical
    assert abs(float((R.flatten() @ A.flatten()) / (R.norm() * A.norm()))) < 0.5
    v = torch.randn(10, generator=torch.Generator().manual_seed(2))
    rv = M.random_delta_like(v, torch.Generator().manual_seed(3))
    assert rv.norm() == pytest.approx(float(v.norm()), rel=1e-5)
    assert torch.equal(M.random_delta_like(torch.zeros(4, 3), torch.Generator()), torch.zeros(4, 3))
    with pytest.raises(CourseError):
        M.random_delta_like(torch.zeros(2, 2, 2), torch.Generator())


def test_feature_reward_correlation():
    r = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    feats = torch.stack([2 * r + 1, -r, torch.ones(4), torch.tensor([1.0, 0.0, 1.0, 0.0])], dim=1)
    c = M.feature_reward_correlation(feats, r)
    assert c[0] == pytest.approx(1.0) and c[1] == pytest.approx(-1.0) and c[2] == 0.0
    assert -1.0 <= float(c[3]) <= 1.0
    with pytest.raises(CourseError):
        M.feature_reward_correlation(feats, r[:3])
    with pytest.raises(CourseError):
        M.feature_reward_correlation(feats[:1], r[:1])


def _full_svd_alignment(dA, dB, k):
    """The textbook direction alignment (exercise 5's solution): full SVDs of both matrices."""
    k = min(k, min(dA.shape))
    Ua = torch.linalg.svd(dA.double(), full_matrices=False)[0][:, :k]
    Ub = torch.linalg.svd(dB.double(), full_matrices=False)[0][:, :k]
    return float((Ua.T @ Ub).abs().max(dim=1).values.mean())


@pytest.mark.parametrize("m,n", [(300, 40), (40, 300), (64, 64)])
def test_gram_path_equals_the_full_svd(m, n):
    """spectrum / truncate_rank / direction_alignment use the Gram matrix of the smaller side
    instead of a full SVD (GPT-2's 50257 x 768 embedding delta): the same numbers."""
    g = torch.Generator().manual_seed(m + n)
    # a delta-like matrix: a low-rank signal plus dense noise (distinct singular values)
    A = (torch.randn(m, 3, generator=g, dtype=torch.float64) @ torch.randn(3, n, generator=g, dtype=torch.float64)
         + 0.3 * torch.randn(m, n, generator=g, dtype=torch.float64))
    B = A + 0.8 * torch.randn(m, n, generator=g, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    s, top = M.spectrum(A, k=5)
    assert s.shape == (min(m, n),) and top.shape == (m, 5)
    assert torch.allclose(s, S, rtol=1e-9, atol=1e-9 * float(S[0]))
    # top = U_k diag(s_k), up to the sign of each column
    assert torch.allclose(top.abs(), (U[:, :5] * S[:5]).abs(), atol=1e-8 * float(S[0]))
    for k in (1, 3, 5):
        want = _full_svd_alignment(A, B, k)
        assert M.direction_alignment(A, B, k) == pytest.approx(want, abs=1e-9)
        # the compact stand-in: the textbook function on the top-k factors gives the same value
        ta, tb = M.spectrum(A, k)[1], M.spectrum(B, k)[1]
        assert _full_svd_alignment(ta, tb, k) == pytest.approx(want, abs=1e-9)
        assert torch.allclose(M.truncate_rank(A, k), (U[:, :k] * S[:k]) @ Vh[:k], atol=1e-9 * float(S[0]))
    # a float32 delta stays float32 through truncate_rank; k=0 gives zeros
    assert M.truncate_rank(A.float(), 2).dtype == torch.float32
    assert torch.equal(M.truncate_rank(A.float(), 0), torch.zeros(m, n))


def test_spectrum_of_a_rank_deficient_delta_is_exactly_zero_beyond_its_rank():
    A = _with_singular_values([3.0, 2.0], m=50, n=20)
    s, top = M.spectrum(A, k=4)
    assert torch.allclose(s[:2], torch.tensor([3.0, 2.0], dtype=torch.float64), atol=1e-9)
    assert torch.equal(s[2:], torch.zeros(18, dtype=torch.float64))
    assert float(top[:, 2:].abs().max()) < 1e-6     # no energy in directions 3 and 4
    # the metrics of the singular values alone are unchanged when given diag(s)
    assert M.effective_rank_energy(torch.diag(s)) == pytest.approx(M.effective_rank_energy(A), abs=1e-9)
    assert M.effective_rank_roy_vetterli(torch.diag(s)) == pytest.approx(M.effective_rank_roy_vetterli(A), abs=1e-9)
    assert M.top1_energy(torch.diag(s)) == pytest.approx(M.top1_energy(A), abs=1e-12)
    assert torch.equal(M.spectrum(torch.zeros(6, 4), 2)[0], torch.zeros(4, dtype=torch.float64))
