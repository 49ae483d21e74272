"""The course's PPO and DQN on probe environments whose optimal values are known."""
import pytest
import torch

from utils.envs.probe import ProbeEnv
from utils.rl.dqn import DQNConfig, train_dqn
from utils.rl.ppo import PPOConfig, train_ppo

torch.set_num_threads(1)
PPO_FAST = dict(n_envs=16, n_steps=8, lr=1e-2, hidden=(16,), gamma=0.9)
DQN_FAST = dict(n_envs=16, batch_size=64, buffer_size=2_000, learning_starts=256, target_update_every=256, lr=3e-3,
                hidden=(16,), gamma=0.9, exploration_fraction=0.5)


def ppo(env_id, steps=8_192, **kw):
    return train_ppo(PPOConfig(env_id=env_id, total_steps=steps, **{**PPO_FAST, **kw}), progress=False)


def dqn(env_id, steps=8_000, **kw):
    return train_dqn(DQNConfig(env_id=env_id, total_steps=steps, **{**DQN_FAST, **kw}), progress=False)


def test_ppo_constant_reward_value():
    _, v = ppo("probe_constant").policy.forward_both(torch.ones(1, 1))
    assert v.item() == pytest.approx(1.0, abs=0.05)


def test_ppo_observation_dependent_value():
    _, v = ppo("probe_obs_reward").policy.forward_both(torch.tensor([[-1.0], [1.0]]))
    assert v.tolist() == pytest.approx([-1.0, 1.0], abs=0.1)


def test_ppo_delayed_reward_discounts():
    _, v = ppo("probe_delayed").policy.forward_both(torch.eye(2))
    assert v.tolist() == pytest.approx([0.9, 1.0], abs=0.08)


def test_ppo_learns_action_dependent_reward():
    policy = ppo("probe_action_reward").policy
    assert torch.softmax(policy(torch.zeros(1, 1)), -1)[0, 1] > 0.95


def test_ppo_learns_observation_and_action_dependent_reward():
    policy = ppo("probe_obs_action_reward", steps=16_384).policy
    probs = torch.softmax(policy(torch.tensor([[-1.0], [1.0]])), -1)
    assert probs[0, 0] > 0.9 and probs[1, 1] > 0.9
    _, v = policy.forward_both(torch.tensor([[-1.0], [1.0]]))
    assert v.tolist() == pytest.approx([1.0, 1.0], abs=0.2)


def test_dqn_constant_and_delayed_values():
    q = dqn("probe_constant").qnet(torch.ones(1, 1))
    assert q.item() == pytest.approx(1.0, abs=0.08)
    q = dqn("probe_delayed").qnet(torch.eye(2)).squeeze(-1)
    assert q.tolist() == pytest.approx([0.9, 1.0], abs=0.1)


def test_dqn_action_values():
    q = dqn("probe_obs_action_reward", steps=12_000).qnet(torch.tensor([[-1.0], [1.0]]))
    # obs -1: action 0 is right (+1), action 1 wrong (-1); obs +1: the reverse
    assert q.flatten().tolist() == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=0.2)


def test_probe_env_rewards_are_what_the_table_says():
    env = ProbeEnv("probe_obs_action_reward", 8, seed=0)
    obs = env.reset()
    correct = (obs[:, 0] > 0).long()
    _, r, term, _, info = env.step(correct)
    assert torch.all(r == 1) and torch.all(term) and torch.all(info["success"])
    env = ProbeEnv("probe_delayed", 4)
    env.reset()
    _, r, term, _, _ = env.step(torch.zeros(4))
    assert torch.all(r == 0) and not term.any()
    _, r, term, _, info = env.step(torch.zeros(4))
    assert torch.all(r == 1) and term.all() and torch.all(info["final_obs"] == torch.tensor([0.0, 1.0]))
