"""The course's PPO and DQN: they learn the gridworld and CartPole, are deterministic from a
seed, and reject bad configs and inputs with one-line CourseErrors before training."""
import gymnasium
import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.envs import make_env
from utils.models.mlp_policy import HookedMLPPolicy
from utils.rl.dqn import DQNConfig, epsilon_at, train_dqn
from utils.rl.evaluate import evaluate_gridworld, random_policy_rates
from utils.rl.ppo import PPOConfig, train_ppo
from utils.stats import fraction_recovered_ci

torch.set_num_threads(1)


def test_ppo_learns_gridworld_well_above_chance():
    res = train_ppo(PPOConfig(total_steps=110_000, seed=0), progress=False)
    ev = evaluate_gridworld(res.policy, 500, seed=9)
    assert ev["success"].mean() > random_policy_rates(2000)["success"] + 0.3
    assert len(res.log["return"]) == res.config.n_iterations and all(np.isfinite(res.log["sps"]))


def test_ppo_is_deterministic_from_its_seed():
    a = train_ppo(PPOConfig(total_steps=4_096, seed=3), progress=False).policy
    b = train_ppo(PPOConfig(total_steps=4_096, seed=3), progress=False).policy
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_ppo_early_stop_at_success_threshold():
    res = train_ppo(PPOConfig(total_steps=400_000, stop_at_success=0.6, seed=0), progress=False)
    assert res.reached_threshold_at is not None and res.log["env_steps"][-1] < 400_000


def test_dqn_learns_gridworld_above_chance():
    res = train_dqn(DQNConfig(total_steps=60_000, gamma=0.9, seed=0), progress=False)
    ev = evaluate_gridworld(res.qnet, 500, seed=9)
    assert ev["success"].mean() > random_policy_rates(2000)["success"] + 0.15


def test_ppo_on_cartpole_through_gymnasium():
    res = train_ppo(PPOConfig(env_id="CartPole-v1", total_steps=16_384, n_envs=8, n_steps=128, seed=0), progress=False)
    first, last = np.nanmean(res.log["return"][:2]), np.nanmean(res.log["return"][-3:])
    assert last > 1.5 * first


def test_epsilon_schedule():
    cfg = DQNConfig(total_steps=1000, exploration_fraction=0.5, start_eps=1.0, end_eps=0.1)
    assert epsilon_at(0, cfg) == 1.0 and epsilon_at(250, cfg) == pytest.approx(0.55) and epsilon_at(900, cfg) == 0.1


@pytest.mark.parametrize("kw,match", [
    (dict(n_envs=0), "n_envs"), (dict(lr=-1e-3), "lr"), (dict(gamma=1.5), "gamma"), (dict(n_minibatches=3), "divisible"),
    (dict(total_steps=100), "rollout"), (dict(hidden=()), "hidden"), (dict(env_id="NoSuchEnv-v0"), "unknown environment"),
    (dict(clip_coef=0), "clip_coef"), (dict(stop_at_success=1.5), "stop_at_success"),
])
def test_ppo_bad_config(kw, match):
    with pytest.raises(CourseError, match=match):
        train_ppo(PPOConfig(**kw), progress=False)


@pytest.mark.parametrize("kw,match", [
    (dict(n_envs=0), "n_envs"), (dict(lr=-1.0), "lr"), (dict(batch_size=10_000, buffer_size=1_000), "buffer_size"),
    (dict(learning_starts=10**9), "learning_starts"), (dict(tau=0.0), "tau"), (dict(env_id="nope"), "unknown environment"),
])
def test_dqn_bad_config(kw, match):
    with pytest.raises(CourseError, match=match):
        train_dqn(DQNConfig(**kw), progress=False)


def test_bad_inputs_are_one_line_course_errors():
    with pytest.raises(CourseError, match="unknown environment") as e:
        make_env("colour_gaol", 4)
    assert "\n" not in str(e.value)
    with pytest.raises(CourseError, match="n_envs"):
        make_env("colour_goal", 0)
    with pytest.raises(CourseError, match="flat Box"):
        make_env("MiniGrid-CourseColourGoal-7x7-v0", 2)
    with pytest.raises(CourseError, match="policy expects obs_dim"):
        train_ppo(PPOConfig(total_steps=4_096), policy=HookedMLPPolicy(10, 4), progress=False)
    policy = HookedMLPPolicy(77, 4)
    with pytest.raises(CourseError, match="shape"):
        policy(torch.zeros(3, 76))
    with pytest.raises(CourseError):
        fraction_recovered_ci(torch.ones(3), torch.ones(3), torch.ones(3))


def test_ppo_callback_sees_every_update_and_changes_nothing():
    """train_ppo's optional callback: called at 0 (initial network) and after each update, and a
    run with a callback is identical to one without (checkpointing over training, utils.dynamics)."""
    cfg = dict(env_id="colour_goal", total_steps=4 * 16 * 8, n_envs=16, n_steps=8, hidden=(8,), seed=3)
    seen, first = [], {}

    def callback(n_updates, policy, log):
        seen.append((n_updates, len(log["env_steps"])))
        if n_updates == 0:
            first.update({k: v.clone() for k, v in policy.state_dict().items()})

    with_cb = train_ppo(PPOConfig(**cfg), progress=False, callback=callback)
    without = train_ppo(PPOConfig(**cfg), progress=False)
    assert seen == [(i, i) for i in range(5)]
    for k, v in with_cb.policy.state_dict().items():
        assert torch.equal(v, without.policy.state_dict()[k])
        assert not torch.equal(v, first[k]) or "bias" in k  # the initial copy is a snapshot
    assert with_cb.log["success"] == without.log["success"] or all(
        a == b or (a != a and b != b) for a, b in zip(with_cb.log["success"], without.log["success"]))


class _TwoStepEnv(gymnasium.Env):
    """Ends after two steps; the final step's info says whether the last action was 1."""
    observation_space = gymnasium.spaces.Box(-1, 1, (2,))
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {"is_success": False}

    def step(self, action):
        self.t += 1
        done = self.t >= 2
        return np.zeros(2, np.float32), 1.0, done, False, {"is_success": bool(done and action == 1)}


def test_gym_vec_env_reads_success_from_the_step_that_ended_the_episode():
    """Same-step autoreset puts the reset's info at top level: success must come from final_info."""
    from utils.envs.gym_vec import GymVecEnv

    if "CourseTwoStep-v0" not in gymnasium.registry:
        gymnasium.register("CourseTwoStep-v0", entry_point=_TwoStepEnv)
    env = GymVecEnv("CourseTwoStep-v0", 3)
    env.reset()
    _, _, term, _, info = env.step(torch.tensor([1, 1, 1]))
    assert not term.any() and not info["success"].any()
    _, _, term, _, info = env.step(torch.tensor([1, 0, 1]))
    assert term.all()
    assert info["success"].tolist() == [True, False, True]
    env.close()


def test_gym_vec_env_success_means_the_goal_for_acrobot_and_the_time_limit_for_cartpole():
    from utils.envs.gym_vec import GymVecEnv

    assert GymVecEnv("Acrobot-v1", 1).success_when == "terminated"
    assert GymVecEnv("CartPole-v1", 1).success_when == "time_limit"
    term, trunc = np.array([True, False, False]), np.array([False, True, False])
    done = term | trunc
    assert GymVecEnv._success({}, done, term, trunc, "terminated").tolist() == [True, False, False]
    assert GymVecEnv._success({}, done, term, trunc, "time_limit").tolist() == [False, True, False]
    with pytest.raises(CourseError, match="success_when"):
        GymVecEnv("CartPole-v1", 1, success_when="goal")
