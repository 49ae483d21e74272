"""The anchors' probe setup for chapter 08 (utils/planning/probes.py): labels over the rest of the
episode, distances from the agent, F1 by distance with the agent's own square apart (a probe that
only reads the next action must score there and nowhere else), and the decoded plan on the board."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.envs.sokoban import LevelBank
from utils.models.drc import DRC
from utils.planning.play import play
from utils.planning.probes import (agent_distance, f1_by_distance, fit_square_probe, plan_labels, plot_plan,
                                   square_rows)


@pytest.fixture(scope="module")
def played():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DRC((5, 6, 6), 5, channels=4, depth=1, ticks=1, hidden=8)
    bank = LevelBank(6, "test", size=6, n_boxes=1, min_moves=3)
    return play(model, bank, max_steps=10, greedy=False, record=("hook_h.0.0",), seed=1)


def test_rest_of_episode_labels_and_distances(played):
    p = played
    full, short = plan_labels(p, None), plan_labels(p, 1)
    n, T = p.actions.shape
    assert full["agent"].shape == (n, T, 6, 6)
    assert ((short["agent"] > 0) <= (full["agent"] > 0)).all()   # the rest of the episode sees at least as much
    # horizon 1: only the agent's own square can be labelled with where it goes next
    d = agent_distance(p)
    assert (d[short["agent"] > 0] == 0).all() and d.shape == (n, T, 6, 6)
    r, c = p.agent[2, 3]
    assert d[2, 3, r, c] == 0 and d[2, 3, 0, 0] == r + c
    f, y, g, dist = square_rows(p.acts["hook_h.0.0"], full["agent"], p, with_distance=True)
    assert len(f) == len(y) == len(g) == len(dist) and dist.min() == 0
    with pytest.raises(CourseError, match="rest of the episode"):
        plan_labels(p, 0)


def test_f1_by_distance_separates_a_next_action_reader_from_a_plan():
    rng = np.random.default_rng(0)
    n = 4000
    groups = rng.integers(0, 40, n)
    dist = rng.integers(0, 6, n)
    y = rng.integers(0, 5, n)
    feats = rng.normal(size=(n, 6)).astype(np.float32)
    here = dist == 0
    feats[here, :5] += 4 * np.eye(5)[y[here]]          # readable only on the agent's own square
    probe = fit_square_probe(torch.from_numpy(feats), torch.from_numpy(y), groups, seed=0, epochs=150, n_boot=50,
                             balance=False)
    out = f1_by_distance(probe, torch.from_numpy(feats), torch.from_numpy(y), groups, dist, n_boot=50)
    assert out["agent's square"]["f1"] > 0.8 and out["4+"]["f1"] < 0.4 and out["1"]["f1"] < 0.4
    assert out["agent's square"]["low"] <= out["agent's square"]["f1"] <= out["agent's square"]["high"]
    assert sum(v["n_rows"] for v in out.values()) == len(probe.test_rows)
    with pytest.raises(CourseError, match="one row each"):
        f1_by_distance(probe, torch.from_numpy(feats), torch.from_numpy(y), groups, dist[:-1])


def test_plot_plan_draws_arrows_and_rejects_bad_input(played):
    p = played
    lab = plan_labels(p, None)["agent"]
    ax = plot_plan(p, lab, episode=1, step=0)
    assert len(ax.patches) == int((lab[1, 0] > 0).sum())
    with pytest.raises(CourseError, match="episode must be"):
        plot_plan(p, lab, episode=99, step=0)
    with pytest.raises(CourseError, match="labels must be"):
        plot_plan(p, lab[:, :2], episode=0, step=0)


def test_training_unrolls_use_the_given_state_reset():
    """Chapter 08 passes the learner's reset_state to train_agent: pretraining, the rollouts and the
    PPO unrolls must all call it."""
    from utils.planning.train import TrainConfig, train_agent
    from utils.rl.recurrent_ppo import reset_state

    calls = []

    def spy(state, starts):
        calls.append(int(torch.as_tensor(starts).sum()))
        return reset_state(state, starts)

    cfg = TrainConfig(size=5, n_train_levels=8, min_moves=2, channels=4, depth=1, ticks=1, hidden=8, bc_epochs=1,
                      bc_batch=4, ppo_steps=256, n_envs=8, max_steps=8)
    with torch.random.fork_rng(devices=[]):
        train_agent("drc", 0, cfg, progress=False, reset_fn=spy)
    assert len(calls) > 100 and max(calls) >= 1


def test_plan_probe_by_distance_and_decode_plan(played):
    from utils.planning.probes import PLAN_BINS, decode_plan, plan_probe_by_distance

    p = played
    probe, table = plan_probe_by_distance(p, p.acts["hook_h.0.0"], seed=0, epochs=10)
    assert set(table) == {"agent's square", "1", "2-3", "4+", "1+"} and len(PLAN_BINS) == 5
    # "1+" pools every bin but the agent's own square
    assert table["1+"]["n_rows"] == sum(table[b]["n_rows"] for b in ("1", "2-3", "4+"))
    with pytest.raises(CourseError, match="plan target"):
        plan_probe_by_distance(p, p.acts["hook_h.0.0"], "wall")
    dec = decode_plan(probe, p.acts["hook_h.0.0"], p)
    n, T = p.actions.shape
    assert dec.shape == (n, T, 6, 6) and dec.min() >= 0 and dec.max() <= 4
    assert (dec[np.broadcast_to(p.walls[:, None], dec.shape)] == 0).all()      # nothing decoded on walls
    assert (dec[~p.live] == 0).all()                                           # nor after the end
    with pytest.raises(CourseError, match="activations"):
        decode_plan(probe, p.acts["hook_h.0.0"][:, :2], p)
