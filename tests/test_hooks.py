import pytest
import torch

from utils.core import CourseError
from utils.interp.attribution import logit_diff
from utils.interp.hooks import cache_activations
from utils.interp.patching import fraction_recovered, patching_sweep, replace_hook, run_patched
from utils.interp.steering import add_hook
from utils.models.mlp_policy import HookedMLPPolicy


@pytest.fixture
def policy():
    torch.manual_seed(0)
    return HookedMLPPolicy(5, 3, (8, 4))


def test_hook_names_and_shapes(policy):
    assert set(policy.hook_dict) == {"hook_obs", "layers.0.hook_pre", "layers.0.hook_post", "layers.1.hook_pre",
                                     "layers.1.hook_post", "hook_logits", "hook_value"}
    obs = torch.randn(7, 5)
    cache = cache_activations(policy, obs)
    assert cache["layers.0.hook_post"].shape == (7, 8)
    assert cache["hook_value"].shape == (7,)
    assert torch.equal(cache["layers.0.hook_post"], torch.relu(cache["layers.0.hook_pre"]))
    assert torch.allclose(cache["hook_logits"], policy(obs))


def test_bad_inputs(policy):
    with pytest.raises(CourseError, match=r"shape \[batch, 5\]"):
        policy(torch.randn(7, 4))
    with pytest.raises(CourseError, match="unknown hook name"):
        cache_activations(policy, torch.randn(2, 5), ["layers.9.hook_post"])
    with pytest.raises(CourseError, match="positive sizes"):
        HookedMLPPolicy(0, 2)


def test_replace_hook_patches_only_given_units(policy):
    obs_a, obs_b = torch.randn(3, 5), torch.randn(3, 5)
    src = cache_activations(policy, obs_a, ["layers.0.hook_post"])["layers.0.hook_post"]
    tgt = cache_activations(policy, obs_b, ["layers.0.hook_post"])["layers.0.hook_post"]
    seen = {}
    policy.run_with_hooks(obs_b, fwd_hooks=[("layers.0.hook_post", replace_hook(src, [1, 3])),
                                            ("layers.0.hook_post", lambda a, hook: seen.setdefault("a", a.clone()))])
    expected = tgt.clone()
    expected[:, [1, 3]] = src[:, [1, 3]]
    assert torch.allclose(seen["a"], expected)


def test_full_patch_reproduces_source_output(policy):
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    src = cache_activations(policy, a, ["layers.1.hook_post"])["layers.1.hook_post"]
    assert torch.allclose(run_patched(policy, b, "layers.1.hook_post", src), policy(a), atol=1e-6)


def test_fraction_recovered_and_logit_diff():
    assert fraction_recovered(3.0, 5.0, 1.0) == pytest.approx(0.5)
    assert fraction_recovered(torch.tensor([1.0, 5.0]), 5.0, 1.0) == pytest.approx(0.5)
    with pytest.raises(CourseError, match="same metric"):
        fraction_recovered(1.0, 2.0, 2.0)
    assert torch.equal(logit_diff(torch.tensor([[1.0, 4.0, 0.0]]), 1, 0), torch.tensor([3.0]))


def test_patching_sweep_known_answer():
    # a network whose output depends only on input unit 0: patching unit 0 recovers all, unit 1 nothing
    policy = HookedMLPPolicy(2, 2, (2,))
    with torch.no_grad():
        policy.layers[0].linear.weight.copy_(torch.eye(2))
        policy.layers[0].linear.bias.zero_()
        policy.actor.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        policy.actor.bias.zero_()
    clean, corrupt = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    out = patching_sweep(policy, clean, corrupt, ["layers.0.hook_post", "hook_obs"], lambda lg: logit_diff(lg, 1, 0),
                         per_unit=True)
    assert out["layers.0.hook_post"].tolist() == pytest.approx([1.0, 0.0])
    whole = patching_sweep(policy, clean, corrupt, ["hook_obs"], lambda lg: logit_diff(lg, 1, 0))
    assert float(whole["hook_obs"]) == pytest.approx(1.0)


def test_add_hook_steers(policy):
    obs = torch.randn(2, 5)
    direction = torch.zeros(4)
    direction[0] = 1.0
    cache = {}
    policy.run_with_hooks(obs, fwd_hooks=[("layers.1.hook_post", add_hook(direction, 2.5)),
                                          ("layers.1.hook_post", lambda a, hook: cache.setdefault("a", a))])
    base = cache_activations(policy, obs, ["layers.1.hook_post"])["layers.1.hook_post"]
    assert torch.allclose(cache["a"] - base, 2.5 * direction.expand_as(base))


def test_bad_patch_and_steering_inputs_fail_up_front_with_one_line():
    torch.manual_seed(0)
    policy = HookedMLPPolicy(6, 3, (8, 4))
    obs = torch.randn(5, 6)
    src = cache_activations(policy, obs, ["layers.0.hook_post"])["layers.0.hook_post"]
    for bad in (lambda: run_patched(policy, obs, "layers.0.hook_post", src[:3]),          # 3 rows for 5 inputs
                lambda: run_patched(policy, obs, "layers.0.hook_post", src[:, :5]),       # wrong width
                lambda: run_patched(policy, obs, "layers.0.hook_post", src, [0, 8]),      # unit out of range
                lambda: run_patched(policy, obs, "layers.9.hook_post", src),              # unknown hook
                lambda: add_hook(torch.ones(5, 1)),                                       # not one vector
                lambda: add_hook(torch.tensor([float("nan"), 1.0]))):
        with pytest.raises(CourseError) as e:
            bad()
        assert "\n" not in str(e.value)
    assert run_patched(policy, obs, "layers.0.hook_post", src[:1], [1]).shape == (5, 3)  # one row broadcasts
