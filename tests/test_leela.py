"""Chapter 05's Leela Chess Zero path (utils.alphazero.leela), offline: lczerolens imports beside the CPU
torch, lc0-format fixtures (attention body and ResNet) load through the course loader and evaluate, the
residual blocks found from the graph are the right tensors, failures are one line, puzzles are sound."""
import importlib.util
import os
import subprocess
import sys

import chess
import numpy as np
import pytest
import torch

from utils.alphazero import leela
from utils.checkpoints import REPO_ROOT
from utils.core import CourseError

leela.ensure_lczerolens()      # installed without dependencies when `pip install -r requirements.txt` alone ran
WIDTH, DEPTH = 16, 4


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg, msg
    return msg


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("leela")
    paths = {arch: leela.write_leela_file(d / f"{arch}.onnx", arch=arch, width=WIDTH, depth=DEPTH, seed=1)
             for arch in ("attention", "resnet")}
    return {arch: (p, leela.load_leela(p)) for arch, p in paths.items()}


def test_lczerolens_imports_beside_the_cpu_torch_and_leaves_no_stand_in():
    had_tv = importlib.util.find_spec("torchvision") is not None
    lz = leela.import_lczerolens()
    assert lz.__version__ == leela.LCZEROLENS_VERSION and hasattr(lz, "LczeroModel")
    assert torch.__version__.split("+")[0] == "2.13.0"
    assert (importlib.util.find_spec("torchvision") is not None) == had_tv
    tv = sys.modules.get("torchvision")
    assert tv is None or not getattr(tv, "__course_stub__", False)
    nms = sys.modules["onnx2torch.node_converters.nms"]
    if getattr(nms.torchvision, "__course_stub__", False):   # the stand-in raises, in one line
        with pytest.raises(CourseError, match="no NMS"):
            nms.torchvision.ops.nms(None, None, 0.5)


def test_a_fresh_interpreter_imports_lczerolens_past_a_broken_torchvision(tmp_path):
    """A torchvision that is installed but does not import (PyPI's build beside the CPU torch raises
    `operator torchvision::nms does not exist`) is set aside: lczerolens imports, nothing is left behind."""
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    # leela.py alone (utils.alphazero's __init__ imports transformer_lens, which a broken torchvision breaks)
    code = ("import sys, importlib.util as u; s = u.spec_from_file_location('leela', 'utils/alphazero/leela.py'); "
            "leela = sys.modules['leela'] = u.module_from_spec(s); s.loader.exec_module(leela); "
            "leela.ensure_lczerolens(); "
            "lz = leela.import_lczerolens(); import torch; "
            "assert not any(m.split('.')[0] == 'torchvision' for m in sys.modules), 'left behind'; "
            "print(lz.__version__)")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(leela.LCZEROLENS_VERSION)


@pytest.mark.parametrize("arch", ["attention", "resnet"])
def test_fixture_loads_and_evaluates_start_and_fen_positions(nets, arch):
    path, net = nets[arch]
    assert leela.is_fixture(net) and net.heads == leela.HEADS
    boards = [chess.Board(), *map(chess.Board, leela.PROBE_FENS)]
    batch = leela.evaluate(net, boards)
    lz = leela.import_lczerolens()
    policy = batch.tensors[lz.LczeroKeys.EVALUATION_POLICY]
    wdl = batch.tensors[lz.LczeroKeys.NETWORK_WDL]
    mlh = batch.tensors[lz.LczeroKeys.NETWORK_MLH]
    assert policy.shape == (len(boards), leela.POLICY_SIZE) and wdl.shape == (len(boards), 3)
    assert mlh.shape == (len(boards), 1)
    for b, p in zip(boards, policy):
        n_legal = b.legal_moves.count()
        assert int((p > 0).sum()) == n_legal          # the policy lives on the legal moves only
        if n_legal:
            assert abs(float(p.sum()) - 1) < 1e-5
    assert torch.allclose(wdl.sum(1), torch.ones(len(boards)), atol=1e-5)
    movable = [b for b in boards if b.legal_moves.count()]
    for b, uci in zip(movable, leela.best_moves(net, movable)):
        assert chess.Move.from_uci(uci) in b.legal_moves
    planes = leela.encode_boards(net, boards)
    assert planes.shape == (len(boards), 112, 8, 8)
    # the graph lczerolens converted computes what the torch module that was exported computes
    ref = leela.Lc0Like(arch, WIDTH, DEPTH, seed=1).eval()
    with torch.no_grad():
        want = ref(planes)
        got = leela.graph_module(net)(planes)
    for w, g in zip(want, got):
        assert torch.allclose(w, g, atol=1e-4), (w - g).abs().max()


@pytest.mark.parametrize("arch", ["attention", "resnet"])
def test_residual_blocks_are_found_from_the_graph_and_are_the_blocks_outputs(nets, arch):
    _, net = nets[arch]
    blocks = leela.residual_blocks(net)
    assert len(blocks) == DEPTH and [b.index for b in blocks] == list(range(DEPTH))
    assert {b.kind for b in blocks} == {"attention" if arch == "attention" else "conv"}
    paths = [p for p, _ in leela.hookable_modules(net)]
    assert all(b.path in paths for b in blocks)
    boards = [chess.Board(), *leela.PROBE_FENS[:5]]
    stream = leela.residual_stream(net, boards, embedding=True)
    assert sorted(stream) == [-1, *range(DEPTH)]
    assert all(a.shape == (len(boards), 64, WIDTH) for a in stream.values())
    # compare with the exported torch module's own block outputs, recorded with hooks
    ref = leela.Lc0Like(arch, WIDTH, DEPTH, seed=1).eval()
    got = {}
    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: got.__setitem__(k, o)) for k, blk in enumerate(ref.body)]
    hooks.append(ref.embed.register_forward_hook(lambda m, i, o: got.__setitem__(-1, torch.relu(o))))
    with torch.no_grad():
        ref(leela.encode_boards(net, boards))
    for h in hooks:
        h.remove()
    for k, a in stream.items():
        assert torch.allclose(a, leela.squares_first(got[k], len(boards)), atol=1e-4), k
    # record() by module path, any module
    some = leela.embedding_module(net)
    rec = leela.record(net, boards, [some, blocks[1].path], batch_size=2)
    assert torch.allclose(leela.squares_first(rec[some], len(boards)), stream[-1]) and torch.allclose(
        leela.squares_first(rec[blocks[1].path], len(boards)), stream[1], atol=1e-6)
    with pytest.raises(CourseError, match="hookable_modules") as e:
        leela.record(net, boards, ["no/such/module"])
    _one_line(e)
    with pytest.raises(CourseError, match=f"has {DEPTH} blocks") as e:
        leela.residual_stream(net, boards, blocks=[DEPTH])
    _one_line(e)


def test_blocks_are_found_when_layernorm_is_spelled_out(tmp_path):
    """Older lc0 exports (opset < 17) have no LayerNormalization op: the same blocks are found."""
    path = leela.write_leela_file(tmp_path / "old.onnx", width=WIDTH, depth=3, seed=2, opset=14)
    net = leela.load_leela(path)
    assert len(leela.residual_blocks(net)) == 3
    ref = leela.Lc0Like("attention", WIDTH, 3, seed=2).eval()
    boards = leela.PROBE_FENS[:3]
    out = {}
    ref.body[2].register_forward_hook(lambda m, i, o: out.__setitem__("last", o))
    with torch.no_grad():
        ref(leela.encode_boards(net, boards))
    assert torch.allclose(leela.residual_stream(net, boards, blocks=[2])[2], out["last"], atol=1e-4)


def test_bad_files_and_the_offline_hub_fail_in_one_line(tmp_path, nets, monkeypatch):
    with pytest.raises(CourseError, match="write_leela_file") as e:
        leela.load_leela(tmp_path / "missing.onnx")
    _one_line(e)
    gz = tmp_path / "net.pb.gz"
    gz.write_bytes(b"\x1f\x8b")
    with pytest.raises(CourseError, match="leela2onnx") as e:
        leela.load_leela(gz)
    _one_line(e)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(nets["attention"][0].read_bytes()[:5000])
    with pytest.raises(CourseError, match="not a readable lc0 network") as e:
        leela.load_leela(cut)
    _one_line(e)
    import onnx

    old = onnx.load(str(nets["attention"][0]))
    old.opset_import[0].version = 14        # LayerNormalization at an opset onnx2torch has no converter for
    onnx.save(old, str(tmp_path / "old.onnx"))
    with pytest.raises(CourseError, match="cannot convert its LayerNormalization nodes.*leela2onnx") as e:
        leela.load_leela(tmp_path / "old.onnx")
    _one_line(e)
    with pytest.raises(CourseError, match="filename") as e:
        leela.load_leela(repo_id="lczero-planning/models")
    _one_line(e)
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty"))
    import huggingface_hub.file_download as fd
    monkeypatch.setattr(fd, "HF_HUB_CACHE", str(tmp_path / "empty"), raising=False)
    with pytest.raises(CourseError, match="not in the local Hugging Face cache.*write_leela_file") as e:
        leela.load_leela()
    _one_line(e)


def test_hub_fixture_is_found_offline_under_the_space(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    import huggingface_hub.file_download as fd

    info = leela.write_leela_fixture(tmp_path / "hub", seed=0)
    assert info["files"] == [leela.HUB_FILE] and (tmp_path / "hub" / "spaces--Xmaster6y--lczerolens-demo").is_dir()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(fd, "HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    net = leela.load_leela()
    assert leela.is_fixture(net) and len(leela.residual_blocks(net)) == 15   # T82's depth
    # the look-ahead net ignores history: its boards are encoded without it, whatever their move stack
    assert net.course_input_format == "no_history_zeros"
    played = chess.Board()
    for uci in ("e2e4", "e7e5", "g1f3"):
        played.push_uci(uci)
    assert leela.encode_boards(net, [played])[0, 13:104].abs().sum() == 0
    assert leela.encode_boards(net, [played], input_format="classical_112")[0, 13:104].abs().sum() > 0
    wdl = leela.evaluate(net, chess.Board()).wdl
    assert abs(wdl.win + wdl.draw + wdl.loss - 1) < 1e-5


def _mates_in_one(board) -> list:
    out = []
    for m in list(board.legal_moves):
        board.push(m)
        if board.is_checkmate():
            out.append(m)
        board.pop()
    return out


def _mates_in_two(board) -> list:
    keys = []
    for m in list(board.legal_moves):
        board.push(m)
        if not board.is_game_over() and all(_reply_mated(board, r) for r in list(board.legal_moves)):
            keys.append(m)
        board.pop()
    return keys


def _reply_mated(board, reply) -> bool:
    board.push(reply)
    ok = bool(_mates_in_one(board))
    board.pop()
    return ok


def test_puzzles_are_legal_mates_in_two_with_a_single_key_move():
    assert len(leela.PUZZLES) >= 8 and any(not chess.Board(p["fen"]).turn for p in leela.PUZZLES)
    for p in leela.PUZZLES:
        leela.check_puzzle(p)
        board = chess.Board(p["fen"])
        assert not _mates_in_one(board), p["fen"]
        assert [m.uci() for m in _mates_in_two(board)] == [p["moves"][0]], p["fen"]
        first, third = (chess.Move.from_uci(p["moves"][k]).to_square for k in (0, 2))
        assert first != third
    bad = dict(leela.PUZZLES[0], moves=("e5e6", "f7e8", "a6a7"))
    with pytest.raises(CourseError, match="does not end in mate"):
        leela.check_puzzle(bad)
    with pytest.raises(CourseError, match="not legal"):
        leela.check_puzzle(dict(leela.PUZZLES[0], moves=("e5e7",)))


def test_lookahead_labels_are_the_third_moves_target_in_lc0s_frame():
    labels = leela.lookahead_labels()
    plain = leela.lookahead_labels(lc0_frame=False)
    for p, a, b in zip(leela.PUZZLES, labels, plain):
        target = chess.Move.from_uci(p["moves"][2]).to_square
        assert b == target
        assert a == (target if chess.Board(p["fen"]).turn else chess.square_mirror(target))
    # a puzzle and its colour-swapped copy get the same label in lc0's frame
    assert labels[0] == labels[8] and labels[1] == labels[9]
    with pytest.raises(CourseError, match="move must be"):
        leela.lookahead_labels(move=3)


def test_concept_labels_from_python_chess_agree_with_lczerolens_facts():
    labels = leela.concept_labels(leela.PROBE_FENS)
    assert labels["material_balance"][0] == 0 and labels["mobility"][0] == 20 and labels["in_check"][0] == 0
    assert labels["in_check"][3] == 1 and labels["mobility"][3] == 0          # fool's mate: White is mated
    assert labels["has_queen_us"][4] == 0 and labels["material_balance"][4] == 1
    assert labels["has_queen_them"][7] == 1 and labels["material_balance"][7] == -9   # Black to move, down a queen
    facts = importlib.import_module("lczerolens.facts")
    for fen, bal in zip(leela.PROBE_FENS, labels["material_balance"]):
        b = chess.Board(fen)
        us = facts.MaterialAnalyzer(facts.FactPerspective.SIDE_TO_MOVE).analyze(b).value
        them = facts.MaterialAnalyzer(facts.FactPerspective.WHITE if not b.turn else facts.FactPerspective.BLACK
                                      ).analyze(b).value
        assert us - them == bal, fen
    with pytest.raises(CourseError, match="unknown concept"):
        leela.concept_labels(leela.PROBE_FENS, ["elo"])


def test_probe_dataset_gives_per_block_features_and_labels(nets):
    _, net = nets["attention"]
    feats, labels = leela.probe_dataset(net, leela.puzzle_boards(), names=("material_balance", "in_check"))
    n = len(leela.PUZZLES)
    assert sorted(feats) == list(range(DEPTH)) and all(f.shape == (n, WIDTH) for f in feats.values())
    assert set(labels) == {"material_balance", "in_check"} and all(len(v) == n for v in labels.values())
    flat, _ = leela.probe_dataset(net, leela.puzzle_boards(), names=("in_check",), blocks=[1], pool="flat")
    assert flat[1].shape == (n, 64 * WIDTH)


def test_t4_estimate_is_labelled_and_follows_the_shapes():
    est = leela.t4_estimate()
    assert est["estimate"] is True and est["assumptions"]["n_params"] == leela.T82["n_params"]
    assert abs(est["parts_gib"]["gpu model"] - leela.T82["n_params"] * 4 / 2**30) < 0.01
    more = leela.t4_estimate(n_puzzles=20000, cached_blocks=4)
    assert more["host_gib"] > est["host_gib"] and more["gpu_gib"] == est["gpu_gib"]
    assert leela.t4_estimate(batch=1024)["gpu_gib"] > est["gpu_gib"]
    assert np.isclose(more["parts_gib"]["host cached_stream"], 20000 * 4 * 64 * 768 * 4 / 2**30, atol=1e-3)


def test_the_rehearsal_part_runs_on_the_hub_fixture(tmp_path, monkeypatch):
    """`python -m utils.lm.rehearse --only leela` runs rehearse_leela with the fixtures as the hub cache."""
    import huggingface_hub.constants as hc
    import huggingface_hub.file_download as fd

    from utils.lm.rehearse import rehearse_leela

    leela.write_leela_fixture(tmp_path / "hub")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(fd, "HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    out = rehearse_leela(n_boards=4)
    assert out["model"]["blocks"] == 15 and out["model"]["kind"] == "attention"
    assert out["evaluated"] == len(leela.PUZZLES) + 4 and out["claims"].startswith("skipped")
    assert out["t4"]["estimate"] is True and out["t4"]["fits"] in (True, False)


def test_fixture_module_takes_t82s_heads_and_feed_forward_width():
    net = leela.Lc0Like("attention", width=48, depth=2, heads=6, dff=192)
    assert net.body[0].heads == 6 and net.body[0].ff1.out_features == 192
    with torch.no_grad():
        policy, wdl, mlh = net(torch.zeros(2, 112, 8, 8))
    assert policy.shape == (2, leela.POLICY_SIZE) and wdl.shape == (2, 3) and mlh.shape == (2, 1)
    with pytest.raises(CourseError, match="arch"):
        leela.Lc0Like("transformer")


@pytest.mark.parametrize("arch", ["attention", "resnet"])
def test_patching_a_block_with_the_corrupted_stream_gives_the_corrupted_run(nets, arch):
    """The stream after a found block is all the later layers see: patching it whole reproduces the
    corrupted run's heads exactly (a check that the blocks really are the residual stream), patching
    no square changes nothing, and a few squares move the heads part of the way."""
    _, net = nets[arch]
    clean, corrupt = list(leela.PROBE_FENS[:4]), list(leela.PROBE_FENS[4:8])
    base = leela.run_patched(net, clean, {})
    target = leela.run_patched(net, corrupt, {})
    assert set(base) == set(leela.HEADS)
    for block in (0, DEPTH // 2, DEPTH - 1):
        whole = leela.patch_squares(net, clean, corrupt, block, range(64))
        none = leela.patch_squares(net, clean, corrupt, block, [])
        for h in leela.HEADS:
            assert torch.allclose(whole[h], target[h], atol=1e-4), (block, h)
            assert torch.allclose(none[h], base[h], atol=1e-6), (block, h)
    some = leela.patch_squares(net, clean, corrupt, 0, [0, 9, 27])["policy"]
    assert not torch.allclose(some, base["policy"]) and not torch.allclose(some, target["policy"])
    # a function patch: zero-ablating the last block's stream changes the heads
    last = leela.residual_blocks(net)[-1].path
    zeroed = leela.run_patched(net, clean, {last: torch.zeros_like})
    assert not torch.allclose(zeroed["policy"], base["policy"])
    with pytest.raises(CourseError, match="in pairs") as e:
        leela.patch_squares(net, clean, corrupt[:2], 0, [0])
    _one_line(e)
    with pytest.raises(CourseError, match="has shape") as e:
        leela.run_patched(net, clean, {last: torch.zeros(1)})
    _one_line(e)


def test_randomized_baseline_and_chapter_05s_probe_tools_run_on_leela_features(nets):
    from utils.interp.probes import probe_with_controls

    _, net = nets["attention"]
    rand = leela.randomized(net, seed=3)
    assert [b.path for b in leela.residual_blocks(rand)] == [b.path for b in leela.residual_blocks(net)]
    w0, w1 = leela.graph_module(net).state_dict(), leela.graph_module(rand).state_dict()
    big = [k for k, v in w0.items() if v.ndim >= 2 and v.is_floating_point()]
    assert big and all(torch.equal(w0[k].flatten().sort().values, w1[k].flatten().sort().values) for k in big)
    assert any(not torch.equal(w0[k], w1[k]) for k in big)
    boards = leela.random_boards(48, seed=1)
    feats, labels = leela.probe_dataset(net, boards, names=("has_queen_them",), blocks=[1])
    rand_feats, _ = leela.probe_dataset(rand, boards, names=("has_queen_them",), blocks=[1])
    assert not torch.allclose(feats[1], rand_feats[1])
    row = probe_with_controls(feats[1], labels["has_queen_them"], rand_feats[1], groups=np.arange(len(boards)))
    assert 0 <= row["probe"] <= 1 and 0 <= row["random_net"] <= 1 and "gain" in row


def test_ensure_installs_missing_dependencies_with_torch_held_and_pins_agree_with_requirements(monkeypatch):
    from utils.course.setup_cell import read_pins

    pins = {line.split("==")[0].lower(): line for line in read_pins(REPO_ROOT / "requirements.txt")}
    assert all(pins.get(pin.split("==")[0]) == pin for pin in leela.DEPS.values()), leela.DEPS
    assert not any(p.split("==")[0] in pins for p in leela.NO_DEPS)   # never in requirements.txt (torchvision)
    calls = []

    def fake_run(cmd, **kw):
        calls.append((cmd, open(cmd[cmd.index("-c") + 1]).read() if "-c" in cmd else None))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensordict" else real(name, *a))
    monkeypatch.setattr(subprocess, "run", fake_run)
    leela.ensure_lczerolens()
    (cmd, held), = calls
    assert cmd[-1] == leela.DEPS["tensordict"] and "--no-deps" not in cmd
    assert held.strip() == f"torch=={torch.__version__}"
