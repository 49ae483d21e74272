"""Sokoban (chapter 08): reverse-play levels are solvable, the BFS solver is optimal, and the
batched step follows the rules and Boxoban's rewards."""
import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.envs.sokoban import (AGENT, BOX, DOWN, LEFT, NOOP, RIGHT, SOLVED, STEP_REWARD, UP, Level, LevelBank,
                                Sokoban, generate_level, replay, solve)


def _level(text: str) -> Level:
    rows = text.strip("\n").split("\n")
    side = max(len(rows), max(map(len, rows)))
    rows = [row.ljust(side, "#") for row in rows] + ["#" * side] * (side - len(rows))
    walls = np.array([[ch == "#" for ch in row] for row in rows])
    find = lambda chars: tuple((r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch in chars)
    return Level(walls, find(".*+"), find("$*"), find("@+")[0])


CORRIDOR = _level("""
#######
#@ $ .#
#######
""")


def test_solver_is_optimal_on_a_hand_made_level():
    assert solve(CORRIDOR) == (RIGHT, RIGHT, RIGHT)
    assert replay(CORRIDOR, (RIGHT, RIGHT, RIGHT))[0]
    assert not replay(CORRIDOR, (RIGHT, RIGHT))[0]


def test_unsolvable_level_returns_none():
    stuck = _level("""
#####
#$ .#
#@  #
#####
""")
    assert solve(stuck) is None  # a box in a corner never moves


@pytest.mark.parametrize("n_boxes,size", [(1, 7), (2, 8)])
def test_generated_levels_are_solvable_with_their_stored_optimal_moves(n_boxes, size):
    bank = LevelBank(25, split="test", seed=3, size=size, n_boxes=n_boxes, min_moves=4)
    for lv in bank.levels:
        assert len(lv.boxes) == n_boxes and not set(lv.boxes) & set(lv.targets)
        assert replay(lv, lv.moves)[0]
        assert not replay(lv, lv.moves[:-1])[0]  # optimal: one move fewer never solves
        assert len(lv.moves) >= 4


def test_splits_differ_and_banks_are_reproducible():
    a, b = LevelBank(10, "train", seed=0), LevelBank(10, "train", seed=0)
    assert [x.render() for x in a.levels] == [x.render() for x in b.levels]
    test = LevelBank(10, "test", seed=0)
    assert {x.render() for x in a.levels}.isdisjoint({x.render() for x in test.levels})


def test_push_rules_and_rewards():
    env = Sokoban(2, LevelBank.from_levels([CORRIDOR]), max_steps=10)
    env.set_levels([0, 0])
    obs, r, term, trunc, info = env.step([RIGHT, NOOP])
    assert torch.allclose(r, torch.tensor([STEP_REWARD, STEP_REWARD]))
    assert obs[0, AGENT, 1, 2] == 1 and obs[1, AGENT, 1, 1] == 1
    obs, r, term, _, info = env.step([RIGHT, LEFT])  # push; walk into the wall
    assert obs[0, BOX, 1, 4] == 1 and bool(info["pushed"][0]) and obs[1, AGENT, 1, 1] == 1
    obs, r, term, _, info = env.step([RIGHT, UP])
    assert bool(term[0]) and not bool(term[1])
    assert r[0].item() == pytest.approx(STEP_REWARD + 1.0 + SOLVED)
    assert info["success"][0] and info["episode_length"][0] == 3
    assert obs[0, AGENT].sum() == 1  # auto-reset started a new level


def test_a_box_against_a_wall_does_not_move():
    lv = _level("""
######
#@$  #
#   .#
######
""")
    env = Sokoban(1, LevelBank.from_levels([lv]), auto_reset=False)
    env.set_levels([0])
    env.step([RIGHT])
    obs, *_ = env.step([RIGHT])  # the box reaches the wall at (1, 4)
    assert obs[0, BOX, 1, 4] == 1 and obs[0, AGENT, 1, 3] == 1
    obs, _, _, _, info = env.step([RIGHT])  # pushing it into the wall moves nothing
    assert obs[0, BOX, 1, 4] == 1 and obs[0, AGENT, 1, 3] == 1 and not info["pushed"][0]


def test_truncation_after_max_steps():
    env = Sokoban(3, LevelBank(3, seed=1), max_steps=2, auto_reset=False)
    env.step([NOOP] * 3)
    _, _, term, trunc, info = env.step([NOOP] * 3)
    assert trunc.all() and not term.any() and not info["success"].any()


def test_bad_input_is_one_line():
    with pytest.raises(CourseError, match="too small"):
        generate_level(np.random.default_rng(0), size=4)
    with pytest.raises(CourseError, match="split"):
        LevelBank(2, split="valid")
    env = Sokoban(2, LevelBank(2))
    with pytest.raises(CourseError, match="expected 2 actions"):
        env.step([0])
    with pytest.raises(CourseError, match="actions must be ints"):
        env.step([0, 7])
    broken = Level(np.zeros((5, 5), bool), ((1, 1),), ((2, 2),), (3, 3))
    with pytest.raises(CourseError, match="one size"):
        LevelBank.from_levels([])
    with pytest.raises(CourseError, match="border"):
        solve(broken)
    with pytest.raises(CourseError, match="as many boxes"):
        solve(Level(CORRIDOR.walls, (), (), (1, 1)))
