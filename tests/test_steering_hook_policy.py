"""utils.steering: the steering hook, frozen weights, the masked policy, the significance test."""
from types import SimpleNamespace

import pytest
import torch

from utils.core import CourseError
from utils.stats import fisher_exact_p, n_for_power
from utils.steering.hook import assert_unchanged, feature_delta, steer_resid, weight_fingerprint
from utils.steering.policy import Critic, FeaturePolicy, masked_categorical, ppo_ratio


def _sae(d_sae=10, d=4):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(d_sae, d, generator=g)
    return SimpleNamespace(W_dec=W / W.norm(dim=1, keepdim=True), b_dec=torch.ones(d))


def test_steer_resid_adds_decoder_row_only_where_chosen():
    sae = _sae()
    resid = torch.randn(2, 3, 4)
    feats = torch.tensor([[-1, 2, -1], [9, -1, 0]])
    out = steer_resid(resid, sae, feats, 5.0)
    assert torch.equal(out[0, 0], resid[0, 0]) and torch.equal(out[1, 1], resid[1, 1])
    assert torch.allclose(out[0, 1], resid[0, 1] + 5 * sae.W_dec[2])
    assert torch.allclose(out[1, 0], resid[1, 0] + 5 * sae.W_dec[9])   # no b_dec anywhere
    assert torch.allclose(feature_delta(sae, torch.tensor([1, 3]), torch.tensor([[1.0, -2.0]]))[0],
                          sae.W_dec[1] - 2 * sae.W_dec[3])


def test_steer_resid_rejects_bad_input():
    sae = _sae()
    with pytest.raises(CourseError, match="features must be"):
        steer_resid(torch.randn(2, 3, 4), sae, torch.zeros(2, 2, dtype=torch.long), 1.0)
    with pytest.raises(CourseError, match="outside the dictionary"):
        steer_resid(torch.randn(1, 1, 4), sae, torch.tensor([[10]]), 1.0)
    with pytest.raises(CourseError, match="d_model=4"):
        steer_resid(torch.randn(1, 1, 5), sae, torch.tensor([[1]]), 1.0)


def test_fingerprint_detects_a_changed_weight():
    net = torch.nn.Linear(3, 2)
    fp = weight_fingerprint(net)
    assert_unchanged(net, fp)
    with torch.no_grad():
        net.bias[0] += 1e-6
    with pytest.raises(AssertionError, match="bias"):
        assert_unchanged(net, fp)



def test_fingerprint_of_a_large_tensor_is_a_digest_that_still_detects_changes():
    def add(w):
        w[4321, 7] += 1e-4

    def swap_rows(w):
        w[[1, 2]] = w[[2, 1]].clone()

    def flip_row(w):
        w[10] *= -1

    for change in (add, swap_rows, flip_row):
        torch.manual_seed(0)
        net = torch.nn.Embedding(5000, 300)     # 1.5M values: digested, not copied
        fp = weight_fingerprint(net)
        assert fp["weight"].numel() < 10_000
        assert_unchanged(net, fp)
        with torch.no_grad():
            change(net.weight)
        with pytest.raises(AssertionError, match="weight"):
            assert_unchanged(net, fp)

def test_masked_categorical_and_ratio():
    logits = torch.randn(3, 6)
    mask = torch.tensor([[1, 0, 0, 1, 0, 0], [0] * 6, [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    d = masked_categorical(logits, mask)
    assert torch.all(d.probs[0, [1, 2, 4, 5]] == 0) and torch.allclose(d.probs[1], torch.softmax(logits[1], -1))
    assert d.probs[2, 5] == 1
    a = d.sample()
    assert torch.allclose(ppo_ratio(logits, mask, a, d.log_prob(a)), torch.ones(3))
    with pytest.raises(CourseError):
        masked_categorical(logits, mask[:, :3])


def test_policy_starts_uniform_and_checks_width():
    pol, critic = FeaturePolicy(8, 20), Critic(8)
    x = torch.randn(5, 8) * 30
    assert torch.allclose(torch.softmax(pol(x), -1), torch.full((5, 20), 1 / 20))
    assert critic(x).shape == (5,)
    with pytest.raises(CourseError):
        pol(torch.randn(2, 7))


def test_fisher_matches_scipy_and_power():
    from scipy.stats import fisher_exact

    for k1, n1, k2, n2 in [(1, 100, 3, 100), (12, 40, 3, 35), (0, 3, 3, 3), (500, 1000, 450, 1000)]:
        want = fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])[1]
        assert fisher_exact_p(k1, n1, k2, n2) == pytest.approx(want, rel=1e-6)
    assert 700 < n_for_power(0.01, 0.03) < 850
    with pytest.raises(CourseError):
        fisher_exact_p(5, 3, 1, 2)
