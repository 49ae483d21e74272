"""The procgen maze for chapter 06's released agent (utils.goal_misgen.procgen_maze).

The state format, the maze edits and the decision square are pure functions, tested on hand-made grids
without procgen. The live part (procgen-mirror's get_state / set_state, the action groups, the
cheese-vector experiment on the random-weight fixture at full shape) runs where procgen-mirror is
installed (`python -m utils.goal_misgen.procgen_maze --install`) and is skipped elsewhere."""
import struct

import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.goal_misgen import procgen_maze as P

B, E, C = P.BLOCKED, P.EMPTY, P.CHEESE

# a 5 x 5 tree maze (one path between any two squares), row 0 at the BOTTOM (as procgen stores it).
# Drawn top row first:
#   . . . # .      row 4: the corner (4, 4) is reached up column 4
#   . # . # .
#   # # . . .      row 2: (2, 4) is where the branch to the left part leaves the corner's path
#   . # # # .      row 1: (1, 0) is a dead end next to the start
#   . . . . .      row 0: the mouse starts at (0, 0)
_DRAWN = ["...#.",
          ".#.#.",
          "##...",
          ".###.",
          "....."]
INNER = np.array([[B if ch == "#" else E for ch in row] for row in _DRAWN[::-1]])


def _world(inner, pad=2):
    return np.pad(inner, pad, constant_values=B)


def _with_cheese(inner, sq):
    g = inner.copy()
    g[sq] = C
    return g


def test_decision_square_is_where_the_paths_to_the_cheese_and_the_corner_part():
    # corner path from (0,0): along row 0 to (0,4), up column 4 to (4,4)
    assert P.bfs_path(INNER, (0, 0), (4, 4)) == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    # cheese in the dead end next to the start: the paths part at once
    g = _with_cheese(INNER, (1, 0))
    assert P.decision_square(g) == (0, 0)
    assert P.decision_moves(g, (0, 0)) == ("UP", "RIGHT")
    # cheese at (4, 2): shared path to (2, 4), then left along row 2 to (2, 2) and up; corner goes up
    g = _with_cheese(INNER, (4, 2))
    assert P.decision_square(g) == (2, 4)
    assert P.decision_moves(g, (2, 4)) == ("LEFT", "UP")
    # cheese on the way to the corner: no decision square (and none without a cheese)
    assert P.decision_square(_with_cheese(INNER, (1, 4))) is None
    assert P.decision_square(INNER) is None
    # a different start: from the top-left, the cheese at (0, 0) is down column 4, the corner up it
    g = _with_cheese(INNER, (0, 0))
    assert P.decision_square(g, start=(4, 0)) == (2, 4) and P.decision_moves(g, (2, 4)) == ("DOWN", "UP")
    assert P.decision_square(_with_cheese(INNER, (4, 0))) == (2, 4)


def test_padding_inner_grid_and_moves():
    world = _world(_with_cheese(INNER, (4, 2)), pad=3)
    assert P.padding_of(world) == 3 and P.inner_grid(world).shape == (5, 5)
    assert P.cheese_square(world) == (7, 5)
    assert P.move_between((2, 2), (3, 2)) == "UP" and P.move_between((2, 2), (2, 1)) == "LEFT"
    with pytest.raises(CourseError, match="not neighbours"):
        P.move_between((0, 0), (1, 1))
    two = world.copy()
    two[3, 3] = C
    with pytest.raises(CourseError, match="one cheese"):
        P.cheese_square(two)
    walled = INNER.copy()
    walled[0, 1] = walled[1, 0] = B            # the start is walled in
    with pytest.raises(CourseError, match="cannot be reached"):
        P.decision_square(_with_cheese(walled, (4, 0)))


def test_action_groups_cover_the_15_actions_once():
    idx = sorted(i for g in P.ACTION_GROUPS.values() for i in g)
    assert idx == list(range(15))
    logits = torch.zeros(2, 15)
    logits[1, 5] = 10.0                           # UP
    probs = P.action_probs(logits)
    assert torch.allclose(sum(probs.values()), torch.ones(2))
    assert torch.allclose(probs["LEFT"][0], torch.tensor(3 / 15)) and float(probs["UP"][1]) > 0.99


def test_state_round_trip_and_edits_change_only_their_bytes():
    world = _world(_with_cheese(INNER, (4, 2)))
    state = P.synthetic_state(world, mouse=(2, 2))
    raw = state.to_bytes()
    back = P.MazeState.from_bytes(raw)
    assert back.to_bytes() == raw
    assert (back.grid == world).all() and back.mouse == (2, 2) and back.cheese == (6, 4)
    assert back.padding == 2 and (back.inner() == _with_cheese(INNER, (4, 2))).all()
    # moving the mouse: only its x and y floats change
    moved = back.with_mouse((6, 2)).to_bytes()
    diff = [i for i in range(len(raw)) if raw[i] != moved[i]]
    assert len(moved) == len(raw) and diff and P.MazeState.from_bytes(moved).mouse == (6, 2)
    assert back.mouse == (2, 2)                     # edits copy
    x_at = raw.index(struct.pack("<f", 2.5))        # the entity's x, then y: 8 bytes
    assert all(x_at <= i < x_at + 8 for i in diff)
    # removing / moving the cheese changes grid cells only
    plain = P.MazeState.from_bytes(back.without_cheese().to_bytes())
    assert plain.cheese is None and (plain.grid != world).sum() == 1
    elsewhere = back.with_cheese((2, 6))
    assert elsewhere.cheese == (2, 6) and (elsewhere.grid == C).sum() == 1
    assert P.decision_square(elsewhere.inner()) is None     # (0, 4) is on the way to the corner
    for bad, square in ((back.with_mouse, (3, 3)), (back.with_cheese, (0, 0))):
        with pytest.raises(CourseError, match="open square"):
            bad(square)


def test_bad_state_bytes_fail_in_one_line():
    raw = P.synthetic_state(_world(INNER), mouse=(2, 2)).to_bytes()
    other = P.synthetic_state(_world(INNER), mouse=(2, 2), game_name="coinrun").to_bytes()
    for bad, match in ((raw[:-4], "not a procgen maze state"), (raw + b"\0\0\0\0", "bytes left"),
                       (other, "the game is 'coinrun'"), ("text", "bytes of env.callmethod")):
        with pytest.raises(CourseError, match=match) as e:
            P.MazeState.from_bytes(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(CourseError, match="square"):
        P.synthetic_state(np.zeros((3, 4)), (0, 0))


def test_install_pins_stay_out_of_requirements():
    from utils.checkpoints import REPO_ROOT
    from utils.course.setup_cell import read_pins

    for req in ("requirements.txt", "requirements-colab.txt"):
        names = {line.split("==")[0].lower() for line in read_pins(REPO_ROOT / req)}
        assert names and not names & {pin.split("==")[0] for pin in P.PINS}, req


# ------------------------------------------------------------------ with procgen-mirror installed

@pytest.fixture(scope="module")
def procgen():
    """procgen-mirror, installed without its dependencies into _build/pip-no-deps when missing (as
    `make test` does for chapter 05's lczerolens); skipped only where the registry cannot be reached."""
    if not P.procgen_available():
        try:
            P.ensure_procgen()
        except Exception as e:  # noqa: BLE001 - no registry: the pure tests above still ran
            pytest.skip(f"procgen-mirror could not be installed ({type(e).__name__}): "
                        "python -m utils.goal_misgen.procgen_maze --install")
    return P.import_procgen()


def test_live_states_parse_and_round_trip_byte_for_byte(procgen):
    sizes = set()
    for seed in range(12):
        env = P.make_maze_env(seed)
        raw = env.callmethod("get_state")[0]
        state = P.MazeState.from_bytes(raw)
        assert state.to_bytes() == raw
        inner = state.inner()
        sizes.add(inner.shape[0])
        assert state.grid.shape == (P.WORLD_DIM, P.WORLD_DIM) and state.tail["maze_dim"] == inner.shape[0]
        assert (state.mouse[0] - state.padding, state.mouse[1] - state.padding) == (0, 0)   # bottom-left
        assert state.cheese is not None and (inner == C).sum() == 1
    assert len(sizes) > 1


def test_set_state_renders_the_edit_and_the_action_groups_move_as_named(procgen):
    env = P.make_maze_env(0)
    state = P.get_state(env)
    start = P.observe(env)
    assert (P.observe(env, state) == start).all()
    assert (P.observe(env, state.without_cheese()) != start).any()
    inner, pad = state.inner(), state.padding
    for name, (dr, dc) in P.DELTAS.items():
        # an open square whose neighbour in that direction is open, and a step with the group's first action
        sq = next(tuple(int(v) for v in s) for s in np.argwhere(inner == E)
                  if 0 <= s[0] + dr < inner.shape[0] and 0 <= s[1] + dc < inner.shape[1]
                  and inner[s[0] + dr, s[1] + dc] == E)
        at = (sq[0] + pad, sq[1] + pad)
        P.set_state(env, state.with_mouse(at))
        env.act(np.array([P.ACTION_GROUPS[name][0]]))
        assert P.get_state(env).mouse == (at[0] + dr, at[1] + dc), name


def test_cheese_vector_experiment_end_to_end_on_the_fixture(procgen, tmp_path):
    from utils.goal_misgen import impala

    policy = impala.load_maze_policy(impala.write_maze_fixture(tmp_path / "model_rand_region_5.pth"))
    res = P.cheese_vector_experiment(policy, seeds=range(8), at="decision")
    assert res["fixture"] and res["n_mazes"] + len(res["no_decision_square"]) == 8 and res["n_mazes"] >= 2
    assert list(res["p_cheese"]) == list(P.CONDITIONS)
    for name, probs in res["p_cheese"].items():
        assert len(probs) == res["n_mazes"] and all(0 <= p <= 1 for p in probs)
        assert all(p + q <= 1 + 1e-6 for p, q in zip(probs, res["p_corner"][name]))
    # at the decision square with coeff 1, subtracting the cheese vector IS removing the cheese there
    assert np.allclose(res["p_cheese"]["cheese vector"], res["p_cheese"]["cheese removed"], atol=1e-5)
    assert not np.allclose(res["p_cheese"]["cheese vector"], res["p_cheese"]["original"], atol=1e-9)
    # one maze by hand: the same probabilities from its case
    case = P.maze_case(P.make_maze_env(res["seeds"][0]), res["seeds"][0])
    assert np.allclose(P.decision_probs(policy, case), (res["p_cheese"]["original"][0], res["p_corner"]["original"][0]),
                       atol=1e-6)
    assert np.isclose(P.decision_probs(policy, case, cheese=False)[0], res["p_cheese"]["cheese removed"][0], atol=1e-6)
    # with a huge coefficient the patch moves the policy; the source's numbers travel with the result
    big = P.cheese_vector_experiment(policy, seeds=range(8), coeff=1e4, controls=False)
    assert list(big["p_cheese"]) == ["original", "cheese removed", "cheese vector"]
    assert not np.allclose(big["p_cheese"]["cheese vector"], big["p_cheese"]["original"], atol=1e-3)
    assert big["source"] == {"original": 0.81, "cheese vector": 0.03}
    assert "FIXTURE" in P.format_result(res)
    with pytest.raises(CourseError, match="at is 'start'"):
        P.cheese_vector_experiment(policy, seeds=range(3), at="corner")


def test_rehearsal_part_loads_the_fixture_and_says_skipped_without_procgen(tmp_path, monkeypatch):
    from utils.lm import rehearse

    monkeypatch.setattr(P, "procgen_available", lambda: False)
    out = rehearse.rehearse_procgen(tmp_path / "released" / "model_rand_region_5.pth")
    assert out["skipped"] == rehearse.PROCGEN_SKIP and out["model"]["params"] == 3_653_136
    assert (tmp_path / "released" / "model_rand_region_5.pth").exists() and "median_p_cheese" not in out


def test_ensure_procgen_installs_without_dependencies_into_the_target_and_holds_torch(tmp_path, monkeypatch):
    import importlib.util
    import subprocess
    import sys

    calls = []

    def fake_run(cmd, **kw):
        calls.append((cmd, open(cmd[cmd.index("-c") + 1]).read() if "-c" in cmd else None))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    real = importlib.util.find_spec
    gone = {"procgen", "gym3", "gym", "imageio"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a))
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    where = P.ensure_procgen(target=tmp_path)
    (deps, held), (no_deps, _) = calls
    assert deps[-1] == P.DEPS["imageio"] and "--no-deps" not in deps and held.strip() == f"torch=={torch.__version__}"
    assert no_deps[-3:] == list(P.PINS) and "--no-deps" in no_deps
    assert no_deps[no_deps.index("--target") + 1] == str(tmp_path)
    assert where == str(tmp_path / "procgen") and sys.path[-1] == str(tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: no wheel"))
    with pytest.raises(CourseError, match="could not install .*--install"):
        P.ensure_procgen(target=tmp_path / "other")
