"""utils.interp.adapters: any policy network gets HookPoints without editing its class, and the
cached activations are the ones a manual forward pass computes, bit for bit."""
import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from utils.core import CourseError
from utils.interp import cache_activations, patching_sweep, run_patched
from utils.interp.adapters import AdapterWarning, adapt
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
    with pytest.warns(AdapterWarning, match="PyTorch's default initialisation"):
        rand = agent.reinitialised(5)
    assert rand.init_source == "PyTorch's default reset_parameters"
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


# ------------------------------------------------------------------ the agent's own initialisation
def test_random_init_control_is_the_libraries_own_init():
    """SB3: the re-drawn policy IS the one SB3 builds with that seed (bit for bit), and its weight
    statistics are SB3's (orthogonal, action head gain 0.01), not PyTorch's defaults."""
    from stable_baselines3 import PPO

    model = _sb3_ppo()
    agent = adapt(model)
    rand = agent.reinitialised(7)
    assert rand.init_source.startswith("the library's constructor")
    fresh = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=7, device="cpu").policy
    for (k, v), (k2, w) in zip(rand.module.state_dict().items(), fresh.state_dict().items()):
        assert k == k2 and torch.equal(v, w), k
    std = lambda m, name: float(dict(m.named_parameters())[name].detach().std())  # noqa: E731
    torch_default = agent.module.action_net.weight.new_empty(2, 64)
    nn.init.kaiming_uniform_(torch_default, a=5 ** 0.5)        # what reset_parameters draws
    assert std(rand.module, "action_net.weight") < 0.003 < float(torch_default.std())
    obs = torch.randn(256, 4)
    _, c_rand = rand.run_with_cache(obs)
    _, c_fresh = adapt(fresh).run_with_cache(obs)
    h = "mlp_extractor.policy_net.3.hook_out"
    assert abs(float(c_rand[h].abs().mean()) - float(c_fresh[h].abs().mean())) < 1e-6
    assert torch.equal(agent.module.action_net.weight, model.policy.action_net.weight)   # original untouched
    # what _get_constructor_parameters leaves out (share_features_extractor) is kept, and DQN too
    from stable_baselines3 import DQN
    for algo, kw in ((PPO, dict(policy_kwargs=dict(share_features_extractor=False), n_steps=64, batch_size=64)),
                     (DQN, dict(buffer_size=100))):
        made = lambda seed: algo("MlpPolicy", "CartPole-v1", seed=seed, device="cpu", **kw).policy  # noqa: E731
        again = adapt(made(0)).reinitialised(4).module
        assert all(torch.equal(v, w) for v, w in zip(again.state_dict().values(), made(4).state_dict().values()))


def test_random_init_control_cleanrl_convention_and_init_argument():
    torch.manual_seed(0)
    agent = CleanRLAgent()
    with torch.no_grad():
        for p in agent.parameters():
            p.mul_(3.0)                        # "trained" weights, far from any initialisation
    obs = torch.randn(4, 5)
    c = adapt(agent, example_obs=obs[:1])
    rand = c.reinitialised(1)
    assert rand.init_source == "CleanRL's layer_init convention"
    ref = CleanRLAgent()
    from utils.interp.adapters import cleanrl_layer_init
    cleanrl_layer_init(ref)
    for (k, v), (_, w) in zip(rand.module.state_dict().items(), ref.state_dict().items()):
        if k.endswith("weight"):
            assert abs(float(v.std()) / float(w.std()) - 1) < 0.35, k
    assert float(rand.module.actor[2].weight.std()) < 0.01 < float(rand.module.critic[2].weight.std())
    mine = adapt(agent, example_obs=obs[:1], init=lambda m: [nn.init.zeros_(p) for p in m.parameters()])
    z = mine.reinitialised(0)
    assert z.init_source.startswith("init=") and all(float(p.abs().max()) == 0 for p in z.module.parameters())
    assert float(agent.actor[0].weight.abs().max()) > 0


# ------------------------------------------------------------------ recurrent agents
def _recurrent_ppo(policy="MlpLstmPolicy", env="CartPole-v1", **policy_kwargs):
    from sb3_contrib import RecurrentPPO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RecurrentPPO(policy, env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
                            policy_kwargs=policy_kwargs)


@torch.no_grad()
def _agreement(model, agent, env, n_steps=16, seed=1):
    """Greedy actions of SB3-contrib's predict and of the adapted agent's step, each carrying its own
    hidden state through an episode (and the reset after it); returns (agreements, steps, states equal)."""
    obs, _ = env.reset(seed=seed)
    sb3_state, start = None, np.ones(1, bool)
    state = agent.initial_state(1)
    agree, same = 0, True
    for _ in range(n_steps):
        a, sb3_state = model.predict(obs, state=sb3_state, episode_start=start, deterministic=True)
        logits, _, state = agent.step(obs, state, start)
        agree += int(logits.argmax(-1)[0]) == int(a)
        same &= torch.equal(state.pi[0], torch.as_tensor(sb3_state[0]))
        obs, _, term, trunc, _ = env.step(int(a))
        start = np.array([term or trunc])
        if term or trunc:
            obs, _ = env.reset(seed=seed + 1)
    return agree, n_steps, same


def test_recurrent_ppo_is_detected_and_follows_its_hidden_state():
    model = _recurrent_ppo(lstm_hidden_size=16, n_lstm_layers=2, enable_critic_lstm=True)
    model.learn(64)
    agent = adapt(model)
    assert agent.kind == "sb3_recurrent" and agent.recurrent
    names = set(agent.hook_dict)
    assert {"lstm_actor.hook_h_in", "lstm_actor.hook_c_out", "lstm_critic.hook_h_out"} <= names
    assert agent.shapes["lstm_actor.hook_h_in"] == (2, 16)
    agree, n, same = _agreement(model, agent, gym.make("CartPole-v1"), 24)
    assert agree == n and same
    # observations alone are refused in one line; a step input (obs, state, start) is accepted
    with pytest.raises(CourseError, match="is recurrent: its action depends on the hidden state") as e:
        agent(torch.zeros(3, 4))
    assert "\n" not in str(e.value)
    obs = torch.randn(5, 4)
    s1 = agent.step(obs)[2]
    inputs = agent.pack(obs, s1, torch.zeros(5))
    with torch.no_grad():
        logits, cache = agent.run_with_cache(inputs)
        assert torch.equal(logits, agent.step(obs, s1, torch.zeros(5))[0])
        assert torch.equal(cache["lstm_actor.hook_h_in"], s1.pi[0].transpose(0, 1))
        # the episode start resets the state: any state with start=1 gives the initial state's logits
        assert torch.equal(agent(agent.pack(obs, s1, torch.ones(5))), agent(agent.pack(obs)))
    # the hidden state is a patchable site: patching h and c (actor and critic) from A into B gives A
    other = agent.pack(obs, agent.step(obs + 1, s1, torch.zeros(5))[2], torch.zeros(5))
    with torch.no_grad():
        _, cache_a = agent.run_with_cache(inputs)
    hooks = [(f"{m}.hook_{w}_in", (lambda src: lambda act, hook: src)(cache_a[f"{m}.hook_{w}_in"]))
             for m in ("lstm_actor", "lstm_critic") for w in "hc"]
    with torch.no_grad():
        patched = agent.run_with_hooks(other, fwd_hooks=hooks)
        assert not torch.equal(agent(other), logits) and torch.allclose(patched, logits, atol=1e-6)
    # the random-init control re-runs sb3-contrib's constructor with the seed
    from sb3_contrib import RecurrentPPO
    rand = agent.reinitialised(3)
    fresh = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=3, device="cpu",
                         policy_kwargs=dict(lstm_hidden_size=16, n_lstm_layers=2, enable_critic_lstm=True)).policy
    assert all(torch.equal(v, w) for v, w in zip(rand.module.state_dict().values(), fresh.state_dict().values()))


def _rgb_env(env_id="MiniGrid-Empty-5x5-v0"):
    import minigrid  # noqa: F401
    from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

    return ImgObsWrapper(RGBImgPartialObsWrapper(gym.make(env_id)))


def test_recurrent_cnn_lstm_512_agrees_with_predict_on_hwc_frames(capsys):
    """The case that was silently wrong: CnnLstmPolicy(lstm_hidden_size=512) adapted as feed-forward
    agreed with predict on 0 of 16 observations. Now 16 of 16, fed the env's HWC frames."""
    model = _recurrent_ppo("CnnLstmPolicy", _rgb_env(), lstm_hidden_size=512,
                           features_extractor_kwargs=dict(features_dim=32))
    agent = adapt(model)
    agree, n, same = _agreement(model, agent, _rgb_env(), 16)
    assert agree == n == 16 and same
    assert agent.obs_layout == "HWC" and "transposed to the policy's" in capsys.readouterr().out


def test_recurrent_layers_in_a_feedforward_adapter_are_refused():
    class Lstm(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 3)

        def forward(self, obs):
            out, _ = self.lstm(obs[:, None])
            return self.head(out[:, -1])

    with pytest.raises(CourseError, match=r"has recurrent layers \(lstm\).*sb3-contrib RecurrentPPO") as e:
        adapt(Lstm(), example_obs=torch.zeros(1, 4))
    assert "\n" not in str(e.value)
    with pytest.warns(AdapterWarning, match="hidden state is whatever forward_fn makes it"):
        adapt(Lstm(), example_obs=torch.zeros(1, 4), forward_fn=lambda m, o: m(o))


# ------------------------------------------------------------------ image observations
def _cnn_ppo(env):
    from stable_baselines3 import PPO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PPO("CnnPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu",
                   policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=32)))


def test_image_observations_hwc_or_chw_normalised_floats_refused(capsys):
    model = _cnn_ppo(_rgb_env())
    assert model.policy.observation_space.shape == (3, 56, 56)
    agent = adapt(model)
    env = _rgb_env()
    frames = np.stack([env.reset(seed=s)[0] for s in range(6)])            # [6, 56, 56, 3] uint8, as the env gives
    hwc = agent(frames)
    assert agent.obs_layout == "HWC" and "transposed to the policy's [.., C, H, W]" in capsys.readouterr().out
    chw = agent(torch.as_tensor(frames).permute(0, 3, 1, 2))
    assert agent.obs_layout == "CHW" and torch.equal(hwc, chw)
    assert torch.equal(hwc.argmax(-1), torch.as_tensor(model.predict(frames, deterministic=True)[0]))
    with torch.no_grad():   # the policy's own preprocessing: SB3 divides by 255 inside extract_features
        want = model.policy.action_net(model.policy.mlp_extractor(
            model.policy.extract_features(torch.as_tensor(frames).permute(0, 3, 1, 2)))[0])
    assert torch.equal(hwc, want)
    assert agent(frames[0]).shape == (1, 7)                                  # one frame: batched
    for bad, match in ((torch.as_tensor(frames).float() / 255, r"floats in \[0, 1\].*divides images by 255 itself"),
                       (frames[:, :50], r"do not fit ActorCriticCnnPolicy's observation space \(3, 56, 56\)"),
                       ({"image": frames}, "dict observations")):
        with pytest.raises(CourseError, match=match) as e:
            agent(bad)
        assert "\n" not in str(e.value)


def test_collect_takes_a_vecframestack_and_env_ids():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    from utils.adventure import harness as H

    venv = VecFrameStack(make_vec_env(_rgb_env, n_envs=2, seed=0, vec_env_cls=DummyVecEnv), 2)
    model = _cnn_ppo(venv)
    agent = adapt(model)
    data = H.collect(agent, venv, 3, seed=0, greedy=True, progress=False,
                     state_fn=lambda env: {"pos": tuple(env.unwrapped.agent_pos)})
    assert data.obs.shape[1:] == (56, 56, 6) and data.episode.unique().tolist() == [0, 1, 2]
    assert torch.equal(data.step[data.episode == 0], torch.arange(int((data.episode == 0).sum())))
    with torch.no_grad():   # collect ran one step at a time: other batch sizes change a conv's last bits
        assert torch.allclose(data.logits, agent(data.obs), atol=1e-6) and torch.equal(data.action, data.greedy)
    assert torch.equal(data.greedy, torch.as_tensor(model.predict(data.obs.numpy(), deterministic=True)[0]))
    assert "pos" in data.info[0]
    again = H.collect(agent, venv, 3, seed=0, greedy=True, progress=False)
    assert torch.equal(again.obs, data.obs)
    H.check_env_id("ALE/Pong-v5")                                           # Atari ids are registered too
    plain = adapt(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), example_obs=torch.zeros(1, 4))
    inst = H.collect(plain, gym.make("CartPole-v1"), 2, seed=0, progress=False)
    by_id = H.collect(plain, "CartPole-v1", 2, seed=0, progress=False)
    assert torch.equal(inst.obs, by_id.obs)


def test_collect_records_a_recurrent_agents_step_inputs():
    from utils.adventure import harness as H

    model = _recurrent_ppo(lstm_hidden_size=8)
    agent = adapt(model)
    data = H.collect(agent, "CartPole-v1", 3, seed=0, greedy=True, progress=False)
    assert data.inputs.shape == (len(data), agent.packed_width)
    with torch.no_grad():   # collect ran one step at a time: other batch sizes change an LSTM's last bits
        assert torch.allclose(agent(data.inputs), data.logits, atol=1e-6)
    assert torch.equal(H.replay_inputs(agent, data), data.inputs)        # the same agent replays the same states
    first = data.step == 0
    assert (data.inputs[first, -1] == 1).all() and (data.inputs[~first, -1] == 0).all()
    assert "lstm_actor.hook_h_out" in data.acts


# ------------------------------------------------------------------ CleanRL and plain modules
class AtariStyleAgent(nn.Module):
    """CleanRL's ppo_atari.py Agent, reduced: a shared network on x / 255, actor and critic heads."""

    def __init__(self):
        super().__init__()
        self.network = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.ReLU())
        self.actor, self.critic = nn.Linear(16, 4), nn.Linear(16, 1)

    def get_value(self, x):
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(self, x, action=None):
        hidden = self.network(x / 255.0)
        probs = torch.distributions.Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def test_cleanrl_forward_never_samples_or_touches_the_global_rng(monkeypatch):
    torch.manual_seed(0)
    agent = AtariStyleAgent()
    obs = torch.randint(0, 256, (8, 3, 4, 4)).float()
    c = adapt(agent, example_obs=obs[:1])

    def no_sampling(self, *a, **k):
        raise AssertionError("the adapter sampled an action")

    monkeypatch.setattr(torch.distributions.Categorical, "sample", no_sampling)
    before = torch.get_rng_state()
    logits, value = c(obs, return_value=True)
    assert torch.equal(before, torch.get_rng_state())
    with torch.no_grad():
        assert torch.equal(logits, agent.actor(agent.network(obs / 255.0)))
        assert torch.equal(value, agent.get_value(obs).squeeze(-1))
    assert c(obs[0]).shape == (1, 4)                                          # one observation: batched


def test_plain_module_traps_refused_or_warned():
    x = torch.randn(4, 6)
    soft = nn.Sequential(nn.Linear(6, 3), nn.Softmax(-1))
    value_only = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    for bad, match in ((lambda: adapt(soft, example_obs=x[:1]), "returns probabilities.*not logits"),
                       (lambda: adapt(nn.Linear(6, 3), example_obs=x[:1], forward_fn=lambda m, o: m(o).softmax(-1)),
                        "returns probabilities"),
                       (lambda: adapt(value_only, example_obs=x[:1]), "one number per observation.*value network"),
                       (lambda: adapt(_seq(), example_obs=x[0]), r"unbatched.*example_obs\[None\]")):
        with pytest.raises(CourseError, match=match) as e:
            bad()
        assert "\n" not in str(e.value)
    assert adapt(nn.Sequential(nn.Linear(6, 3), nn.LogSoftmax(-1)), example_obs=x[:1]).n_actions == 3

    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3, self.act = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3), nn.ReLU()

        def forward(self, obs):
            return self.l3(self.act(self.l2(self.act(self.l1(obs)))))

    with pytest.warns(AdapterWarning, match=r"\['act'\] run more than once per forward") as w:
        r = adapt(Reused(), example_obs=x[:1])
    assert len(w) == 1 and "\n" not in str(w[0].message)
    assert "act.hook_out" not in r.hook_dict and "l2.hook_out" in r.hook_dict
    with pytest.raises(CourseError, match="runs 2 times per forward"):
        adapt(Reused(), example_obs=x[:1], hooks=["act"])

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, obs):
            return self.l2(torch.nn.functional.relu(self.l1(obs)))   # no module to hook after l1

    with pytest.warns(AdapterWarning, match=r"applied as functions.*Functional: .*relu") as w:
        f = adapt(Functional(), example_obs=x[:1])
    assert "\n" not in str(w[0].message) and f.n_actions == 3
    assert adapt(_seq(), example_obs=x[:1])(x[0]).shape == (1, 4)           # one observation: batched


def test_dict_observation_space_is_refused():
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (3,)), "b": gym.spaces.Box(-1, 1, (2,))})
    policy = MultiInputActorCriticPolicy(space, gym.spaces.Discrete(3), lambda _: 1e-3)
    with pytest.raises(CourseError, match="dict observation space") as e:
        adapt(policy)
    assert "\n" not in str(e.value)
