"""The released procgen maze policy's course-owned module (utils.goal_misgen.impala), offline: a
random-weight file in the released format at full shape, procgen-tools' keys and shapes, the
cheese-vector hook, preprocessing, and one-line errors."""
import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.goal_misgen import impala as I


@pytest.fixture(scope="module")
def fixture_file(tmp_path_factory):
    return I.write_maze_fixture(tmp_path_factory.mktemp("maze") / "model_rand_region_5.pth")


def test_released_format_loads_at_full_shape_with_procgen_tools_keys(fixture_file):
    policy = I.load_maze_policy(fixture_file)
    assert policy.fixture and policy.scale == 4
    assert sum(p.numel() for p in policy.parameters()) == 3_653_136
    shapes = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    assert shapes["embedder.block1.conv.weight"] == (64, 3, 3, 3)
    assert shapes["embedder.block2.res1.conv2.weight"] == (128, 128, 3, 3)
    assert shapes["embedder.fc.weight"] == (256, 8192) and shapes["fc_policy.weight"] == (15, 256)
    assert shapes["fc_value.weight"] == (1, 256) and len(shapes) == 36     # 18 layers, each with a bias


def test_cheese_vector_hook_and_an_edit_that_moves_the_policy(fixture_file):
    policy = I.load_maze_policy(fixture_file)
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    obs = I.preprocess(frames)
    assert obs.shape == (2, 3, 64, 64) and 0 <= float(obs.min()) and float(obs.max()) <= 1
    logits, cache = policy.run_with_cache(obs)
    assert cache[I.RESADD_OUT].shape == (2, 128, 16, 16) and logits.shape == (2, 15)
    vec = cache[I.RESADD_OUT][0] - cache[I.RESADD_OUT][1]          # a "cheese vector" of two frames

    def subtract(x, hook):
        return x - vec
    edited = policy.run_with_hooks(obs[:1], fwd_hooks=[(I.RESADD_OUT, subtract)])
    assert not torch.allclose(edited, logits[:1])
    assert max(I.CHEESE_CHANNELS) < 128


def test_bad_inputs_fail_in_one_line(tmp_path, fixture_file):
    policy = I.load_maze_policy(fixture_file)
    for bad, match in ((lambda: I.load_maze_policy(tmp_path / "missing.pth"), "does not exist"),
                       (lambda: I.load_maze_policy(), "give the path"),
                       (lambda: policy(torch.zeros(1, 64, 64, 3)), r"\[batch, 3, 64, 64\]"),
                       (lambda: I.preprocess(np.zeros((64, 64))), "uint8")):
        with pytest.raises(CourseError, match=match) as e:
            bad()
        assert "\n" not in str(e.value)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CourseError, match="not a readable torch checkpoint"):
        I.load_maze_policy(corrupt)
    other = tmp_path / "other.pth"
    torch.save({"model_state_dict": {"conv.weight": torch.zeros(1)}}, other)
    with pytest.raises(CourseError, match="not a procgen IMPALA checkpoint"):
        I.load_maze_policy(other)
