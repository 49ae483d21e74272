"""utils.ad: environments, source algorithms, tokenisation."""
import pytest
import torch

from utils.ad.data import history_tokens, make_tokens, sample_windows
from utils.ad.interp import goal_found_labels, random_walk_hits
from utils.ad.sources import (
    History,
    QLearningConfig,
    annealed_expert_histories,
    bandit_histories,
    expert_action,
    q_learning_histories,
    shuffle_episodes,
)
from utils.core import CourseError
from utils.envs.bandits import BernoulliBandit, random_bandits
from utils.envs.dark_room import DOWN, LEFT, RIGHT, STAY, UP, DarkRoom, optimal_return, split_goals


def test_dark_room_dynamics_and_reward():
    env = DarkRoom(torch.tensor([40 - 9, 0]))  # goal one cell above the centre; a corner
    assert env.reset().tolist() == [40, 40]
    obs, r, term, trunc, _ = env.step(torch.tensor([UP, LEFT]))
    assert not term.any() and not trunc.any()
    assert obs.tolist() == [31, 39] and r.tolist() == [1, 0]
    obs, r, *_ = env.step(torch.tensor([STAY, UP]))
    assert r.tolist() == [1, 0]
    env.pos = torch.tensor([0, 0])
    obs, *_ = env.step(torch.tensor([UP, LEFT]))  # walls clip
    assert obs.tolist() == [0, 0]
    assert optimal_return(torch.tensor([31, 0, 40])).tolist() == [20.0, 13.0, 20.0]


def test_bad_configs_raise_one_line_errors():
    for bad in (lambda: DarkRoom(torch.tensor([81])), lambda: DarkRoom(torch.tensor([3]), size=8),
                lambda: split_goals(9, 0), lambda: QLearningConfig(alpha=0).validate(),
                lambda: BernoulliBandit(torch.rand(3)), lambda: bandit_histories(torch.rand(2, 3), 5, "greedy"),
                lambda: DarkRoom(torch.tensor([3])).step(torch.tensor([7]))):
        with pytest.raises(CourseError) as e:
            bad()
        assert "\n" not in str(e.value)


def test_split_goals_disjoint_and_excludes_start():
    tr, te = split_goals(9, 16, seed=0)
    assert len(te) == 16 and len(tr) == 64 and not set(tr.tolist()) & set(te.tolist()) and 40 not in tr.tolist() + te.tolist()


def test_q_learning_improves_and_is_deterministic():
    tr, _ = split_goals()
    h = q_learning_histories(tr, QLearningConfig(n_episodes=30), seed=3)
    h2 = q_learning_histories(tr, QLearningConfig(n_episodes=30), seed=3)
    assert torch.equal(h.actions, h2.actions)
    norm = h.returns / optimal_return(h.tasks)[:, None]
    assert norm[:, :3].mean() < 0.15 and norm[:, -5:].mean() > 0.6
    # rewards are consistent with the observations
    nxt = torch.cat([h.obs[..., 1:], h.obs[..., -1:]], -1)  # reward 1 iff the next cell is the goal (except the last step)
    assert torch.equal(h.rewards[..., :-1], (nxt[..., :-1] == h.tasks[:, None, None]).long())


def test_q_learning_goal_schedule_and_prefix():
    goals = torch.tensor([31, 49])
    sched = torch.tensor([[31, 31, 49, 49], [49, 49, 31, 31]])
    h = q_learning_histories(sched, QLearningConfig(n_episodes=4), seed=0)
    assert h.obs.shape == (2, 4, 20) and h.tasks.tolist() == [31, 49]
    with pytest.raises(CourseError):
        q_learning_histories(sched, QLearningConfig(n_episodes=3))
    prefix = annealed_expert_histories(goals, 2, 0.0, 0.0, seed=0)
    after = q_learning_histories(goals, QLearningConfig(n_episodes=1, eps_start=0.0, eps_end=0.0), seed=0, prefix=prefix)
    assert (after.returns[:, 0] == optimal_return(goals)).all(), "a greedy Q-learner that lived expert episodes should follow them"


def test_expert_is_optimal_and_annealed_noise():
    goals = torch.arange(81)
    h = annealed_expert_histories(goals, 2, 0.0, 0.0, seed=0)
    assert torch.equal(h.returns[:, 0], optimal_return(goals))
    noisy = annealed_expert_histories(goals, 10, 1.0, 0.0, seed=0)
    assert noisy.returns[:, 0].mean() < noisy.returns[:, -1].mean()
    assert expert_action(torch.tensor([40]), torch.tensor([40]), 9).item() == STAY
    assert expert_action(torch.tensor([40]), torch.tensor([44]), 9).item() == RIGHT
    assert expert_action(torch.tensor([40]), torch.tensor([76]), 9).item() == DOWN


def test_shuffle_episodes_is_a_permutation_per_task():
    tr, _ = split_goals()
    h = q_learning_histories(tr[:5], QLearningConfig(n_episodes=10), seed=0)
    s = shuffle_episodes(h, seed=1)
    assert not torch.equal(s.actions, h.actions)
    assert torch.equal(s.returns.sort(1).values, h.returns.sort(1).values)


def test_bandit_sources():
    means = random_bandits(300, 5, seed=0)
    best = means.max(1).values[:, None]
    reg = {a: (best - means.gather(1, bandit_histories(means, 60, a, seed=0).actions[:, 0]))[:, -20:].mean() for a in ("thompson", "ucb", "random")}
    assert reg["thompson"] < 0.5 * reg["random"] and reg["ucb"] < 0.7 * reg["random"]


def test_make_tokens_and_windows():
    obs = torch.arange(12).reshape(1, 3, 4)
    act = (torch.arange(12) % 5).reshape(1, 3, 4)
    rew = (torch.arange(12) % 2).reshape(1, 3, 4)
    tok = make_tokens(obs, act, rew, 5)
    assert tok.shape == (1, 12, 3)
    assert tok[0, 0].tolist() == [0, 5, 0] and tok[0, 1].tolist() == [1, 0, 0] and tok[0, 4].tolist() == [4, 5, 0]
    h = History(obs, act, rew, torch.tensor([0]))
    t, y = history_tokens(h, 5)
    x, yy = sample_windows(t, y, 4, 2, 8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 8, 3) and (x[:, 0, 1] == 5).all() and (x[:, 4, 1] == 5).all()
    with pytest.raises(CourseError):
        sample_windows(t, y, 4, 4, 8, torch.Generator())


def test_random_walk_hits_and_found_labels():
    goals = torch.tensor([31, 41, 39])
    h = random_walk_hits(goals, 2, seed=0)
    assert (h.rewards.sum(-1) > 0).all()
    lab = goal_found_labels(h)
    first = torch.argmax((h.rewards.reshape(3, -1) > 0).long(), 1)
    flat = lab.reshape(3, -1)
    for i in range(3):
        assert not flat[i, :first[i] + 1].any() and flat[i, first[i] + 1:].all()
