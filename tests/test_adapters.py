"""utils.interp.adapters: any policy network gets HookPoints without editing its class, and the
cached activations are the ones a manual forward pass computes, bit for bit."""
import copy

import pytest
import torch
from torch import nn

from utils.core import CourseError
from utils.interp import cache_activations, patching_sweep, run_patched
from utils.interp.adapters import adapt
from utils.interp.steering import steering_effect


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _seq(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))


def test_sequential_cache_is_the_manual_forward_bit_for_bit():
    net = _seq()
    obs = torch.randn(32, 6)
    agent = adapt(net, example_obs=obs[:1])
    logits, cache = agent.run_with_cache(obs)
    x = obs
    for i, layer in enumerate(net):
        x = layer(x)
        assert torch.equal(cache[f"{i}.hook_out"], x), i
    assert torch.equal(logits, net(obs)) and torch.equal(cache["hook_logits"], x)
    assert torch.equal(cache["hook_obs"], obs)
    names = [r[0] for r in agent.hook_table()]
    assert names[:3] == ["hook_obs", "hook_logits", "hook_value"]
    assert dict((r[0], r[1]) for r in agent.hook_table())["2.hook_out"] == (16,)
    assert not agent.has_value and agent.n_actions == 4 and agent.kind == "module"


def test_hooks_change_the_output_and_leave_the_network_untouched():
    net = _seq()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    obs = torch.randn(8, 6)
    agent = adapt(net, example_obs=obs[:1])
    patched = run_patched(agent, obs, "3.hook_out", torch.zeros(16))
    assert torch.equal(patched, net[4](torch.zeros(8, 16)))
    assert torch.equal(agent(obs), net(obs))          # hooks removed after the run
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert type(net) is nn.Sequential and not hasattr(net[0], "hook_out")


def test_interp_tools_run_on_an_adapted_module():
    net = _seq(1)
    obs = torch.randn(16, 6)
    agent = adapt(net, example_obs=obs[:1])
    res = patching_sweep(agent, obs, obs + 3.0, ["1.hook_out", "3.hook_out"], lambda lg: lg[:, 0].mean())
    assert set(res) == {"1.hook_out", "3.hook_out"}
    # patching the last hidden layer restores the clean logits entirely
    assert torch.isclose(res["3.hook_out"], torch.tensor(1.0), atol=1e-5)
    eff = steering_effect(agent, obs, "3.hook_out", torch.ones(16), [0.0, 5.0], action=0)
    assert eff["direction"].shape == (2,) and eff["random"].shape == (2,)


def test_reinitialised_and_deepcopy_are_independent():
    net = _seq()
    obs = torch.randn(8, 6)
    agent = adapt(net, example_obs=obs[:1])
    rand = agent.reinitialised(5)
    assert not torch.equal(rand(obs), agent(obs))
    assert torch.equal(rand(obs), agent.reinitialised(5)(obs))   # seeded
    assert torch.equal(agent(obs), net(obs))
    twin = copy.deepcopy(agent)
    _, c1 = twin.run_with_cache(obs)
    _, c2 = agent.run_with_cache(obs)
    assert set(c1) == set(c2) and all(torch.equal(c1[k], c2[k]) for k in c1)


def test_chosen_hooks_and_custom_names():
    net = _seq()
    obs = torch.randn(4, 6)
    agent = adapt(net, example_obs=obs[:1], hooks={"blocks.0.hook_post": "1", "blocks.1.hook_post": "3"})
    assert set(agent.hook_dict) == {"hook_obs", "hook_logits", "hook_value", "blocks.0.hook_post", "blocks.1.hook_post"}
    acts = cache_activations(agent, obs, ["blocks.1.hook_post"])["blocks.1.hook_post"]
    assert torch.equal(acts, net[3](net[2](net[1](net[0](obs)))))


class ActorCritic(nn.Module):
    """A user's class returning (logits, value), the common hand-written pattern."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 12), nn.ReLU())
        self.pi, self.v = nn.Linear(12, 3), nn.Linear(12, 1)

    def forward(self, obs):
        h = self.trunk(obs)
        return self.pi(h), self.v(h)


class CleanRLAgent(nn.Module):
    """CleanRL's ppo.py Agent, reduced."""

    def __init__(self):
        super().__init__()
        self.critic = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
        self.actor = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        logits = self.actor(x)
        probs = torch.distributions.Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


def test_tuple_output_module_and_cleanrl_agent():
    torch.manual_seed(0)
    obs = torch.randn(10, 5)
    ac = ActorCritic()
    a = adapt(ac, example_obs=obs[:1])
    logits, value = a(obs, return_value=True)
    assert torch.equal(logits, ac(obs)[0]) and torch.equal(value, ac(obs)[1].squeeze(-1))
    assert "trunk.1.hook_out" in a.hook_dict
    agent = CleanRLAgent()
    c = adapt(agent, example_obs=obs[:1])
    assert c.kind == "cleanrl"
    logits, value = c(obs, return_value=True)
    assert torch.equal(logits, agent.actor(obs)) and torch.equal(value, agent.get_value(obs).squeeze(-1))
    _, cache = c.run_with_cache(obs)
    assert torch.equal(cache["actor.1.hook_out"], agent.actor[1](agent.actor[0](obs)))
    f = adapt(ac, example_obs=obs[:1], forward_fn=lambda m, o: m.pi(m.trunk(o)))
    assert f.kind == "custom" and torch.equal(f(obs), ac.pi(ac.trunk(obs)))


def _sb3_ppo():
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(128)   # trained for a fraction of a second: weights differ from the initialisation
    return model


def test_sb3_ppo_policy_bit_for_bit():
    model = _sb3_ppo()
    policy = model.policy
    agent = adapt(model)           # the algorithm object or model.policy
    assert agent.kind == "sb3_actor_critic" and agent.module is policy
    obs = torch.randn(64, 4)
    logits, cache = agent.run_with_cache(obs, return_value=True)
    logits, value = logits
    with torch.no_grad():
        x = policy.extract_features(obs)
        assert torch.equal(cache["features_extractor.hook_out"], x)
        h = x
        for i, layer in enumerate(policy.mlp_extractor.policy_net):
            h = layer(h)
            assert torch.equal(cache[f"mlp_extractor.policy_net.{i}.hook_out"], h), i
        assert torch.equal(logits, policy.action_net(h))
        assert torch.equal(value, policy.predict_values(obs).squeeze(-1))
        dist = policy.get_distribution(obs).distribution
        assert torch.allclose(torch.log_softmax(logits, -1), dist.logits, atol=1e-6)
        assert torch.equal(logits.argmax(-1), policy._predict(obs, deterministic=True))
    assert agent.shapes["mlp_extractor.policy_net.3.hook_out"] == (64,)
    # after a training step SB3 keeps the last distribution (tensors with a grad_fn) on the policy:
    # the random-init control and deepcopy must still work, and leave the original alone
    policy.evaluate_actions(obs, torch.zeros(64, dtype=torch.long))
    rand = agent.reinitialised(3)
    assert not torch.equal(rand(obs), agent(obs)) and torch.equal(agent(obs), policy.action_net(h))
    assert torch.equal(copy.deepcopy(agent)(obs), agent(obs))


def test_sb3_dqn_policy():
    from stable_baselines3 import DQN

    model = DQN("MlpPolicy", "CartPole-v1", seed=0, device="cpu", learning_starts=0, buffer_size=500)
    model.learn(64)
    agent = adapt(model.policy)
    obs = torch.randn(16, 4)
    q, cache = agent.run_with_cache(obs)
    with torch.no_grad():
        assert torch.equal(q, model.policy.q_net(obs))
        h = model.policy.q_net.extract_features(obs, model.policy.q_net.features_extractor)
        for i, layer in enumerate(model.policy.q_net.q_net):
            h = layer(h)
            assert torch.equal(cache[f"q_net.q_net.{i}.hook_out"], h)
    assert agent.kind == "sb3_q"


def test_bad_input_is_one_line():
    net = _seq()
    obs = torch.randn(4, 6)
    agent = adapt(net, example_obs=obs[:1])
    with pytest.raises(CourseError, match=r"unknown hook name.*the adapter has \[.*'1.hook_out'") as e:
        agent.check_names(["1.hook_ot"])
    assert "\n" not in str(e.value)
    with pytest.raises(CourseError, match="the model has"):
        cache_activations(agent, obs, ["nope"])

    class TwoArgs(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(6, 2)

        def forward(self, obs, hidden):
            return self.l(obs)

    for bad, match in ((lambda: adapt(TwoArgs(), example_obs=obs[:1]), r"cannot call TwoArgs.forward\(obs, hidden\)"),
                       (lambda: adapt(net, example_obs=torch.randn(1, 7)), "cannot call Sequential.forward"),
                       (lambda: adapt(net), "pass example_obs"),
                       (lambda: adapt("not a net", example_obs=obs), "nn.Module"),
                       (lambda: adapt(net, example_obs=obs[:1], hooks=["9"]), r"no submodule '9'.*submodules are"),
                       (lambda: adapt(ActorCritic(), example_obs=torch.randn(1, 5), hooks=["trunk.5"]), "submodules"),
                       (lambda: adapt(nn.Linear(6, 3), example_obs=obs[:1], forward_fn=lambda m, o: m(o)[0]),
                        "not action logits")):
        with pytest.raises(CourseError, match=match) as e:
            bad()
        assert "\n" not in str(e.value)
