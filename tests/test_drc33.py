"""The released DRC(3,3) path offline: the msgpack reader, the exact flax tree at full shape, a forward
pass checked against an independent numpy computation in flax's layout (NHWC, HWIO kernels), the
tinyworld frame, and one-line errors for a missing, corrupted or foreign checkpoint and an offline hub."""
import struct

import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.models import drc33
from utils.models.flax_msgpack import packb, unpackb


def test_reader_decodes_msgpack_spec_bytes():
    assert unpackb(b"\x81\xa1a\x01") == {"a": 1}
    assert unpackb(b"\x93\x01\xa2hi\xc3") == [1, "hi", True]
    assert unpackb(b"\xff") == -1 and unpackb(b"\xd1\xff\x00") == -256 and unpackb(b"\xcd\x01\x00") == 256
    assert unpackb(b"\xcb" + struct.pack(">d", 2.5)) == 2.5 and unpackb(b"\xca" + struct.pack(">f", 0.5)) == 0.5
    assert unpackb(b"\xc4\x03abc") == b"abc" and unpackb(b"\xc0") is None
    assert unpackb(b"\xd9\x05hello") == "hello" and unpackb(b"\xdc\x00\x02\x01\x02") == [1, 2]
    # flax's array extension (ExtType 1 holding (shape, dtype, bytes)) as a fixext-free ext 8
    payload = b"\x93\x92\x02\x01\xa7float32\xc4\x08" + np.array([1.5, -2], dtype=np.float32).tobytes()
    arr = unpackb(b"\xc7" + bytes([len(payload)]) + b"\x01" + payload)
    assert arr.dtype == np.float32 and arr.shape == (2, 1) and arr.ravel().tolist() == [1.5, -2.0]


def test_round_trip_and_corruption():
    tree = {"a": {"k": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.asarray(3, dtype=np.int32)},
            "s": "x" * 40, "l": [1, -5, 2.25, None, False, 10**12, -(10**12)], "b": b"\x00\x01"}
    back = unpackb(packb(tree))
    assert np.array_equal(back["a"]["k"], tree["a"]["k"]) and back["a"]["k"].dtype == np.float32
    assert back["a"]["n"].shape == () and int(back["a"]["n"]) == 3
    assert back["s"] == tree["s"] and back["l"] == tree["l"] and back["b"] == tree["b"]
    data = packb(tree)
    with pytest.raises(CourseError, match="truncated"):
        unpackb(data[:-7])
    with pytest.raises(CourseError, match="left after"):
        unpackb(data + b"\x01")


def test_the_msgpack_package_reads_what_we_write_when_installed():
    msgpack = pytest.importorskip("msgpack")
    arr = np.arange(4, dtype=np.float32)
    got = msgpack.unpackb(packb({"w": arr}), raw=False, strict_map_key=False)
    code, data = got["w"].code, got["w"].data
    shape, dtype, raw = msgpack.unpackb(data, raw=False)
    assert code == 1 and shape == [4] and dtype == "float32" and np.array_equal(np.frombuffer(raw, np.float32), arr)
    written = msgpack.packb({"w": msgpack.ExtType(1, msgpack.packb(((4,), "float32", arr.tobytes())))})
    assert np.array_equal(unpackb(written)["w"], arr)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    path = drc33.write_drc33_file(tmp_path_factory.mktemp("drc33") / "model", seed=3)
    return path, drc33.load_released_drc(path)


def test_fixture_loads_at_full_shape_with_the_course_drc_interface(released):
    path, model = released
    assert 4.5e6 < path.stat().st_size < 6e6   # float32 parameters, no optimiser state
    assert sum(p.numel() for p in model.parameters()) == drc33.N_PARAMS and model.fixture
    frames = drc33.tinyworld(_planes())
    state = model.initial_state(2)
    with torch.no_grad():
        logits, value, new = model.step(frames, state)
    assert logits.shape == (2, 4) and value.shape == (2,) and new[0].shape == (2, 3, 32, 10, 10)
    _, cache = model.run_with_cache(frames)
    for name in ("hook_enc", model.hook_name("h", 2, 2), model.hook_name("c", 0, 1), "hook_logits", "hook_value"):
        assert name in cache
    with pytest.raises(CourseError, match="ticks 0..2"):
        model.hook_name("h", 0, 3)
    with pytest.raises(CourseError, match="uint8"):
        model.step(frames.float() / 255)
    with pytest.raises(CourseError, match="tinyworld"):
        model.step(torch.zeros(2, 4, 10, 10))


def _conv_nhwc(x, kernel, bias=None, pad=None):
    """Cross-correlation in flax's layout: x [B, H, W, I], kernel [kh, kw, I, O], explicit padding."""
    kh, kw = kernel.shape[:2]
    if pad is not None:
        x = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    H, W = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], H, W, kernel.shape[3]))
    for a in range(kh):
        for b in range(kw):
            out += np.einsum("bhwi,io->bhwo", x[:, a:a + H, b:b + W], kernel[a, b])
    return out if bias is None else out + bias


def _reference_step(params, obs_u8, ticks=3):
    """The released network's forward pass from learned-planner's cleanba/convlstm.py, in numpy."""
    net = params["network_params"]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    x = obs_u8.transpose(0, 2, 3, 1).astype(np.float64) / 255.0
    for i in (0, 1):   # SAME for a 4x4 kernel: 1 before, 2 after
        x = _conv_nhwc(x, net[f"conv_list_{i}"]["kernel"], net[f"conv_list_{i}"]["bias"], pad=(1, 2))
    B, H, W, C = x.shape
    h = [np.zeros((B, H, W, C)) for _ in range(3)]
    c = [np.zeros((B, H, W, C)) for _ in range(3)]
    fence = np.ones((B, H + 2, W + 2, 1))
    fence[:, 1:-1, 1:-1] = 0
    first = None
    for _ in range(ticks):
        prev = h[-1]
        for d in range(3):
            p = net[f"cell_list_{d}"]
            pooled = p["project"][0] * h[d].max((1, 2)) + p["project"][1] * h[d].mean((1, 2))
            inp = np.concatenate([x, prev, np.broadcast_to(pooled[:, None, None], (B, H, W, C))], -1)
            g = (_conv_nhwc(inp, p["ih"]["kernel"], p["ih"]["bias"], pad=(1, 1))
                 + _conv_nhwc(h[d], p["hh"]["kernel"], pad=(1, 1)) + _conv_nhwc(fence, p["fence"]["kernel"]))
            i, j, f, o = np.split(g, 4, -1)
            c[d] = c[d] * sig(f) + np.tanh(i) * sig(j)
            h[d] = np.tanh(c[d]) * np.tanh(o)
            prev = h[d]
            first = h[0] if first is None else first
    z = (h[-1] + x).reshape(B, -1)
    z = np.maximum(z @ net["dense_list_0"]["kernel"] + net["dense_list_0"]["bias"], 0)
    logits = z @ params["actor_params"]["Output"]["kernel"] + params["actor_params"]["Output"]["bias"]
    value = z @ params["critic_params"]["Output"]["kernel"] + params["critic_params"]["Output"]["bias"]
    return logits, value[:, 0], first.transpose(0, 3, 1, 2)


def _planes():
    planes = torch.zeros(2, 5, 10, 10)
    planes[:, 0] = 1
    planes[:, 0, 1:-1, 1:-1] = 0
    planes[:, 1, 1:-1, 1:-1] = 1
    for b, (t, x, a) in enumerate((((2, 3), (4, 4), (6, 2)), ((7, 7), (7, 7), (2, 5)))):
        planes[b, 2][t], planes[b, 3][x], planes[b, 4][a] = 1, 1, 1
    return planes


def test_forward_matches_an_independent_numpy_computation(released):
    path, model = released
    params = drc33._find_params(unpackb(path.read_bytes()))
    frames = drc33.tinyworld(_planes())
    frames[1, :, 3:5, 3:8] = torch.tensor(drc33.PALETTE["wall"], dtype=torch.uint8)[:, None, None]
    want_logits, want_value, want_h00 = _reference_step(params, frames.numpy())
    with torch.no_grad():
        logits, cache = model.run_with_cache(frames)
    assert np.allclose(cache["hook_h.0.0"].numpy(), want_h00, atol=1e-4)   # one ConvLSTM step
    assert np.allclose(logits.numpy(), want_logits, atol=1e-3) and np.allclose(cache["hook_value"].numpy(), want_value,
                                                                               atol=1e-3)


def test_tinyworld_uses_gym_sokobans_palette():
    frames = drc33.tinyworld(_planes())
    assert frames.dtype == torch.uint8 and frames.shape == (2, 3, 10, 10)
    px = lambda b, r, c: tuple(frames[b, :, r, c].tolist())  # noqa: E731
    p = drc33.PALETTE
    assert px(0, 0, 0) == p["wall"] and px(0, 1, 1) == p["floor"] and px(0, 2, 3) == p["target"]
    assert px(0, 4, 4) == p["box"] and px(0, 6, 2) == p["agent"] and px(1, 7, 7) == p["box_on_target"]
    with pytest.raises(CourseError, match="planes"):
        drc33.tinyworld(torch.zeros(2, 3, 10, 10))


def test_bad_checkpoints_and_offline_hub_fail_in_one_line(tmp_path, released, monkeypatch):
    path, _ = released
    with pytest.raises(CourseError, match="write_drc33_file"):
        drc33.load_released_drc(tmp_path / "missing")
    cut = tmp_path / "cut"
    cut.write_bytes(path.read_bytes()[: 1000])
    with pytest.raises(CourseError, match="not a readable flax checkpoint"):
        drc33.load_released_drc(cut)
    tree = drc33.random_flax_tree(0)
    tree["params"]["params"]["network_params"]["cell_list_1"]["hh"]["kernel"] = np.zeros((3, 3, 16, 128), np.float32)
    odd = tmp_path / "odd"
    odd.write_bytes(packb(tree))
    with pytest.raises(CourseError, match="cell_list_1/hh/kernel has shape"):
        drc33.load_released_drc(odd)
    # a fence kernel saved with extra input channels is summed over them, as learned-planner does
    tree = drc33.random_flax_tree(1)
    fence = tree["params"]["params"]["network_params"]["cell_list_0"]["fence"]
    fence["kernel"] = np.stack([fence["kernel"][:, :, 0], fence["kernel"][:, :, 0]], 2)
    wide = tmp_path / "wide"
    wide.write_bytes(packb(tree))
    assert torch.allclose(drc33.load_released_drc(wide).cells[0].fence.weight,
                          2 * torch.from_numpy(drc33.random_flax_tree(1)["params"]["params"]["network_params"]
                                               ["cell_list_0"]["fence"]["kernel"]).permute(3, 2, 0, 1))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_home"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(CourseError, match="write_drc33_file"):
        drc33.load_released_drc()


def test_hub_fixture_is_found_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    info = drc33.write_drc33_fixture(tmp_path / "hub", seed=0)
    assert info["files"] == [drc33.HUB_FILE]
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    import huggingface_hub.file_download as fd
    monkeypatch.setattr(fd, "HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    model = drc33.load_released_drc()
    assert model.fixture and sum(p.numel() for p in model.parameters()) == drc33.N_PARAMS


def test_the_chapters_play_code_runs_on_the_released_drc(released):
    from utils.envs.sokoban import LevelBank
    from utils.planning.play import play

    _, model = released
    planes = _planes()
    with torch.no_grad():
        assert torch.equal(model(planes), model(drc33.tinyworld(planes)))   # planes are rendered first
    bank = LevelBank(3, split="test", size=10, n_boxes=1, min_moves=3)
    p = play(model, bank, think=1, max_steps=3, record=(model.hook_name("h", 1, 0),))
    assert p.acts["hook_h.1.0"].shape == (3, 3, 32, 10, 10) and p.actions.shape == (3, 3)
    assert set(np.unique(p.actions[p.actions >= 0])) <= {0, 1, 2, 3}   # four actions, no no-op


BOXOBAN_TEXT = """; 0
##########
##########
####  ####
#  $ .   #
#  @ #   #
#  $. #  #
### $ .$ #
###.     #
##########
##########

; 1
######
#@ *.#
# $  #
#    #
#    #
######
"""


def test_boxoban_levels_parse_and_render_as_tinyworld():
    from utils.envs.sokoban import LevelBank, Sokoban, parse_boxoban

    a, b = parse_boxoban(BOXOBAN_TEXT, solve_levels=False)
    assert a.size == 10 and len(a.boxes) == len(a.targets) == 4 and a.agent == (4, 3) and a.moves is None
    assert a.render().splitlines()[3] == "#  $ .   #"
    assert b.size == 6 and b.boxes == ((1, 3), (2, 2)) and (1, 3) in b.targets   # '*' is a box on a target
    assert len(parse_boxoban("; 0\n" + b.render(), solve_levels=True)[0].moves) > 0
    env = Sokoban(1, LevelBank.from_levels([a]), max_steps=5, auto_reset=False)
    frame = drc33.tinyworld(env.set_levels(np.array([0])))
    assert tuple(frame[0, :, 4, 3].tolist()) == drc33.PALETTE["agent"]
    assert tuple(frame[0, :, 3, 3].tolist()) == drc33.PALETTE["box"] and tuple(frame[0, :, 3, 5].tolist()) == \
        drc33.PALETTE["target"]
    for bad, msg in (("##\n#@", "'; N'"), ("; 0\n###\n#@#\n##", "square"), ("; 0\n####\n#@X#\n#  #\n####", "unknown")):
        with pytest.raises(CourseError, match=msg):
            parse_boxoban(bad)


def test_boxoban_like_rooms_ten_by_ten_with_four_boxes():
    from utils.envs.sokoban import LevelBank, Sokoban, generate_level, replay

    bank = LevelBank(4, split="test", size=10, n_boxes=4, min_moves=15, reverse_steps=150, optimal=False)
    for lv in bank:
        assert lv.size == 10 and len(lv.boxes) == 4 and lv.moves is None
        assert not set(lv.boxes) & set(lv.targets)
    with pytest.raises(CourseError, match="no optimal solution"):
        bank.optimal_lengths()
    with pytest.raises(CourseError, match="optimal=False"):
        generate_level(np.random.default_rng(0), size=10, n_boxes=4)
    small = generate_level(np.random.default_rng(1), size=7, n_boxes=2, optimal=False, min_moves=4)
    assert replay(small, []) == (False, 0.0) and small.moves is None
    frames = drc33.tinyworld(Sokoban(4, bank, auto_reset=False).set_levels(np.arange(4)))
    assert frames.shape == (4, 3, 10, 10)


def test_chapter_measurements_run_on_the_released_drc(released):
    """Section 8 of chapter 08 on the full-shape fixture: thinking curve, pacing, probes by distance
    with the observation-only and random-init controls, and route steering away from the agent."""
    from utils.planning.released import measure_released, released_bank

    bank = released_bank(8)
    assert len(bank) == 8 and bank.size == 10 and all(len(lv.boxes) == 4 for lv in bank)
    out = measure_released(released[1], bank, max_steps=10, think_steps=(0, 1), probe_epochs=5, n_random_init=1,
                           progress=lambda *a: None)
    assert set(out["thinking"]) == {0, 1} and out["n_levels"] == 8
    for k in ("thinking_gain", "pacing_start", "pacing_later", "pacing_start_minus_later"):
        m, lo, hi = out[k]
        assert lo <= m <= hi
    assert set(out["probe"]) == set(out["probe_obs"]) == {"agent's square", "1", "2-3", "4+", "1+"}
    assert len(out["probe_random_init_away"]) == 1
    assert set(out["steer_away"]) == {"probe", "probe_decoy", "matched", "matched_decoy", "isotropic"}
    assert set(out["steer_away_specific"]) == {"probe", "matched"} and 0 <= out["n_steer_levels"] <= 8
