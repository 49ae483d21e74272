"""The colour-goal gridworld: dynamics, rewards, resets, the Gymnasium and MiniGrid versions, bad input."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.envs.colour_goal import (
    BLUE,
    DOWN,
    GYM_ID,
    LEFT,
    RED,
    RIGHT,
    UP,
    ColourGoalGrid,
    counterfactual_cue_pairs,
    cue_pairs,
    encode,
    make_minigrid_colour_goal,
    obs_dim_for,
    random_layouts,
    shortest_path_actions,
)


def test_reset_places_three_distinct_cells_and_valid_obs():
    env = ColourGoalGrid(500, seed=1)
    obs = env.reset()
    assert obs.shape == (500, obs_dim_for(5)) and obs.dtype == torch.float32
    cells = np.concatenate([env.agent[:, None], env.tiles], 1)  # [n, 3, 2]
    flat = cells[..., 0] * 5 + cells[..., 1]
    assert all(len(set(row)) == 3 for row in flat.tolist())
    # one agent, one red, one blue, one cue
    assert torch.all(obs[:, :25].sum(1) == 1) and torch.all(obs[:, 25:50].sum(1) == 1)
    assert torch.all(obs[:, 50:75].sum(1) == 1) and torch.all(obs[:, 75:].sum(1) == 1)
    assert set(env.goal.tolist()) == {RED, BLUE}


def test_moves_and_walls():
    env = ColourGoalGrid(1, seed=0)
    env.set_state([[0, 0]], [[[4, 4], [4, 3]]], [RED])
    env.step_np([UP])  # into the wall: stays
    assert env.agent.tolist() == [[0, 0]]
    env.step_np([RIGHT])
    env.step_np([DOWN])
    assert env.agent.tolist() == [[1, 1]]
    env.step_np([LEFT])
    assert env.agent.tolist() == [[1, 0]]


def test_goal_reward_wrong_tile_and_timeout():
    env = ColourGoalGrid(3, seed=0, max_steps=20)
    env.set_state([[0, 0], [0, 0], [2, 2]], [[[0, 1], [1, 0]]] * 3, [RED, BLUE, RED])
    obs, r, term, trunc, info = env.step_np([RIGHT, RIGHT, UP])
    assert term.tolist() == [True, True, False] and not trunc.any()
    assert info["success"].tolist() == [True, False, False]
    assert r[0] == pytest.approx(1 - 0.9 * 1 / 20) and r[1] == 0 and r[2] == 0
    assert info["episode_return"][0] == pytest.approx(r[0]) and info["episode_length"][0] == 1
    # finished envs were reset: a new episode starts at t=0; final_obs shows the agent on the tile
    assert env.t.tolist()[:2] == [0, 0] and env.t[2] == 1
    assert info["final_obs"][0, 1] == 1  # agent at cell (0, 1)
    # timeout
    env = ColourGoalGrid(1, seed=0, max_steps=3)
    env.set_state([[4, 4]], [[[0, 0], [0, 1]]], [RED])
    for _ in range(3):
        _, _, term, trunc, info = env.step_np([DOWN])
    assert trunc.tolist() == [True] and term.tolist() == [False] and not info["success"][0]


def test_shortest_path_policy_always_succeeds():
    env = ColourGoalGrid(256, seed=3, auto_reset=False)
    done = np.zeros(256, bool)
    succ = np.zeros(256, bool)
    for _ in range(env.max_steps):
        good = shortest_path_actions(env.agent, env.goal_cell())
        # avoid stepping onto the other tile when another shortest move exists
        other = env.tiles[np.arange(256), 1 - env.goal]
        from utils.envs.colour_goal import MOVES
        nxt = np.clip(env.agent[:, None] + MOVES[None], 0, 4)
        good &= ~(nxt == other[:, None]).all(-1)
        a = np.where(good.any(1), good.argmax(1), 0)
        _, _, term, _, info = env.step_np(a)
        succ |= ~done & info["success"]
        done |= term
    assert succ.mean() > 0.95


def test_encode_and_set_state_reject_bad_input():
    with pytest.raises(CourseError):
        encode(np.zeros((2, 3)), np.zeros((2, 2, 2)), np.zeros(2))
    with pytest.raises(CourseError):
        encode(np.full((1, 2), 7), np.zeros((1, 2, 2), int), np.zeros(1, int))
    env = ColourGoalGrid(1)
    with pytest.raises(CourseError, match="different cells"):
        env.set_state([[0, 0]], [[[0, 0], [1, 1]]], [RED])
    with pytest.raises(CourseError, match="actions"):
        env.step_np([0, 1])
    with pytest.raises(CourseError):
        env.step_np([7])
    for bad in (0, -3, 2.5):
        with pytest.raises(CourseError):
            ColourGoalGrid(bad)
    with pytest.raises(CourseError):
        ColourGoalGrid(4, size=2)


def test_gymnasium_version_passes_env_checker_and_matches_batched_dynamics():
    from gymnasium.utils.env_checker import check_env

    env = gym.make(GYM_ID)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=5)
    batched = ColourGoalGrid(1, seed=5, auto_reset=False)
    assert np.array_equal(obs, batched.observe_np()[0])
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = int(rng.integers(4))
        o1, r1, t1, tr1, info = env.step(a)
        o2, r2, t2, tr2, _ = batched.step_np([a])
        assert np.array_equal(o1, o2[0]) and r1 == pytest.approx(float(r2[0])) and t1 == t2[0] and tr1 == tr2[0]
        if t1 or tr1:
            assert "is_success" in info
            break


def test_minigrid_version_reaches_goal_with_reward():
    env = make_minigrid_colour_goal()
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    assert "go to the" in u.mission and obs["image"].shape == (7, 7, 3)
    goal_pos = next((x, y) for x in range(u.width) for y in range(u.height)
                    if (c := u.grid.get(x, y)) is not None and c.type == "floor" and c.color == u.goal_colour)
    # put the agent just left of the goal, facing right (direction 0), and step forward
    u.agent_pos, u.agent_dir = (goal_pos[0] - 1, goal_pos[1]), 0
    if u.grid.get(*u.agent_pos) is not None and u.grid.get(*u.agent_pos).type == "wall":
        u.agent_pos, u.agent_dir = (goal_pos[0] + 1, goal_pos[1]), 2
    _, reward, terminated, _, info = env.step(u.actions.forward)
    assert terminated and info["is_success"] and reward > 0
    with pytest.raises(CourseError):
        make_minigrid_colour_goal(size=1)


# --- chapter 01's interpretability identities and references (moved out of the notebook) ------
def _tiny_policy(seed: int = 0):
    from utils.models.mlp_policy import HookedMLPPolicy

    torch.manual_seed(seed)
    return HookedMLPPolicy(77, 4, (16, 8)).eval()


def test_dla_sums_to_the_logit_difference_and_equals_last_layer_single_unit_patching():
    from utils.interp.attribution import direct_logit_attribution, logit_diff
    from utils.interp.hooks import cache_activations
    from utils.interp.patching import run_patched

    policy = _tiny_policy()
    g = torch.Generator().manual_seed(1)
    clean, corrupt = torch.randn(256, 77, generator=g), torch.randn(256, 77, generator=g)
    keep = policy(clean).argmax(-1) != policy(corrupt).argmax(-1)
    pairs = {"clean": clean[keep], "corrupt": corrupt[keep], "a_clean": policy(clean[keep]).argmax(-1),
             "a_corrupt": policy(corrupt[keep]).argmax(-1)}
    n, L1 = len(pairs["clean"]), "layers.1.hook_post"
    h = cache_activations(policy, torch.cat([pairs["clean"], pairs["corrupt"]]), [L1])[L1]
    W, a, b = policy.actor.weight.detach(), pairs["a_clean"], pairs["a_corrupt"]
    with torch.no_grad():
        change = (direct_logit_attribution(h[:n], W, a, b) - direct_logit_attribution(h[n:], W, a, b)).mean(0)
        base = logit_diff(policy(pairs["corrupt"]), a, b)
        gap = (logit_diff(policy(pairs["clean"]), a, b) - base).mean()
        single = torch.stack([(logit_diff(run_patched(policy, pairs["corrupt"], L1, h[:n], [u]), a, b) - base).mean()
                              for u in range(h.shape[1])])
    assert torch.allclose(change.sum(), gap, atol=1e-4)       # the bias cancels between clean and corrupt
    assert torch.allclose(single, change, atol=1e-5)          # nothing lies between layer 1 and the logits


def test_counterfactual_cue_pairs_flip_only_the_cue_and_the_action():
    policy = _tiny_policy(1)
    agent, tiles, _ = random_layouts(64, seed=3)
    saved = agent.copy(), tiles.copy()
    pairs = counterfactual_cue_pairs(policy, agent, tiles)
    assert np.array_equal(agent, saved[0]) and np.array_equal(tiles, saved[1])
    diff = pairs["clean"] - pairs["corrupt"]
    assert torch.all(diff[:, :-2] == 0) and torch.all(diff[:, -2:] == torch.tensor([1.0, -1.0]))
    assert torch.all(pairs["a_clean"] != pairs["a_corrupt"])
    blind = lambda obs: obs[:, :-2] @ torch.ones(75, 4)  # noqa: E731 (ignores the cue)
    assert counterfactual_cue_pairs(blind, agent, tiles)["clean"].shape == (0, 77)
    with pytest.raises(CourseError):
        cue_pairs(blind, 64, seed=3)


def test_rollout_states_groups_states_by_episode():
    from utils.rl.evaluate import rollout_states

    st = rollout_states(None, 50, seed=2)
    assert st["obs"].shape == (len(st["episode"]), 77) and set(st["episode"]) == set(range(50))
    for e in range(50):   # a layout and a cue per episode, and the observation encodes them
        rows = st["episode"] == e
        assert (st["tiles"][rows] == st["tiles"][rows][0]).all() and (st["goal"][rows] == st["goal"][rows][0]).all()
    assert np.array_equal(st["obs"], encode(st["agent"], st["tiles"], st["goal"]))
    assert np.array_equal(rollout_states(None, 50, seed=2)["obs"], st["obs"])   # seeded


def test_top_k_share_and_steering_effect_references():
    from utils.interp.patching import top_k_share
    from utils.interp.steering import steering_effect

    s = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, -1.0, 0.5, 0.5]])
    assert torch.allclose(top_k_share(s, 1), torch.tensor([0.25, 0.5]))
    assert torch.allclose(top_k_share(s, 4), torch.ones(2))
    with pytest.raises(CourseError):
        top_k_share(torch.zeros(3), 1)
    policy = _tiny_policy(2)
    obs = torch.from_numpy(encode(*random_layouts(200, seed=4)))
    direction = torch.zeros(8)
    direction[0] = 1.0
    out = steering_effect(policy, obs, "layers.1.hook_post", direction, [0.0, 1e4], action=2)
    greedy0 = (policy(obs).argmax(-1) == 2).float().mean()
    assert torch.allclose(out["direction"][0], greedy0) and torch.allclose(out["random"][0], greedy0)
    huge = policy.run_with_hooks(obs, fwd_hooks=[("layers.1.hook_post", lambda a, hook: a + 1e4 * direction)])
    assert torch.allclose(out["direction"][1], (huge.argmax(-1) == 2).float().mean())
