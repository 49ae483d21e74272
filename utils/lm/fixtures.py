"""Hub-shaped fixtures: the gpu profile's hub models and SAEs with their real architecture
class, config, tokenizer size and hook names but RANDOM weights, written into a Hugging Face
cache (`HF_HOME/hub`, the layout `huggingface_hub` itself writes) so that, with
`HF_HOME=<dir> HF_HUB_OFFLINE=1`, the hub code path runs unchanged and offline:

    python -m utils.lm fixtures --out /tmp/hub-fixtures      # then, as printed:
    HF_HOME=/tmp/hub-fixtures HF_HUB_OFFLINE=1 python -c "from utils.lm import load_model; load_model('gpt2')"

What it writes (nothing is downloaded; every file is made here):
- `gpt2` (GPT2LMHeadModel, GPT-2 small at full shape: 12 layers, d_model 768, vocabulary
  50257, 1024 positions) with a byte-level BPE tokenizer of GPT-2's size (merges learnt on
  the course corpora, then filled with synthetic merges up to 50257 ids);
- `jbloom/GPT2-Small-SAEs-Reformatted` (gpt2-small-res-jb) at full shape (d_sae 24576,
  ReLU, the pre-6.0 cfg.json the hub repository has) for the residual layers asked for;
- `google/gemma-2-2b` (Gemma2ForCausalLM, 26 layers, vocabulary 256000) in bfloat16, at
  REDUCED width by default (d_model 256 instead of 2304: a small, quick fixture for the
  transformers path) or at full shape with `--gemma full` (5.2 GB on disk; writing it peaks
  at about 7 GiB of RAM); `--gemma none` skips it. Chapter 04's rehearsal needs the full
  shape, because SAELens' Gemma Scope loader hard-codes d_in 2304. `lm.tl` of a Gemma model is
  a TransformerBridge around the HF model (`utils.lm.api._bridge`: no second copy of the
  weights), which takes the model's own config, so it works at either width;
- `google/gemma-scope-2b-pt-res` (the canonical 16k JumpReLU SAE, `params.npz`) at full
  shape (d_in 2304, which SAELens' loader requires), so `load_sae("gemma-2-2b")` takes its
  real path; with the reduced-width model its hook does not fit that model's residual stream.

Every model config carries `FIXTURE_MARKER` ("course_fixture"), which `is_fixture` reads:
the gpu profile skips its claim asserts on such a model with one printed line.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from utils.core import CourseError

FIXTURE_MARKER = "course_fixture"
MARKER_TEXT = "random weights written by `python -m utils.lm fixtures`: numbers are meaningless"

GPT2_REPO = "gpt2"
GPT2_SAE_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
GPT2_SAE_D = 24576           # gpt2-small-res-jb: expansion 32 of d_model 768
GEMMA_REPO = "google/gemma-2-2b"
GEMMA_SCOPE_REPO = "google/gemma-scope-2b-pt-res"
GEMMA_SCOPE_D = 16384        # width_16k
GEMMA_FULL = dict(hidden_size=2304, intermediate_size=9216, num_attention_heads=8, num_key_value_heads=4,
                  head_dim=256)
GEMMA_REDUCED = dict(hidden_size=256, intermediate_size=1024, num_attention_heads=8, num_key_value_heads=4,
                     head_dim=32)
# Released RL agents' fixture writers, (module, function(hub_cache, seed=...) -> summary): each lives
# beside its loader; write_fixtures (and so `make rehearse`) writes them all
AGENT_FIXTURES = (("utils.adventure.hub", "write_hub_fixture"),   # chapter 12: sb3/ppo-MiniGrid-DoorKey-5x5-v0
                  ("utils.dt.hopper", "write_hopper_fixture"),  # chapter 07: edbeeching/decision-transformer-gym-hopper-medium
                  ("utils.vision_agents.atari_hub", "write_atari_fixtures"),   # chapter 11: Breakout DQN + PPO
                  ("utils.models.drc33", "write_drc33_fixture"),   # chapter 08: AlignmentResearch/learned-planner
                  ("utils.alphazero.leela", "write_leela_fixture"))   # chapter 05: Space Xmaster6y/lczerolens-demo (lc0 ONNX)
DEFAULT_GPT2_LAYERS = (2, 5, 8, 11)     # chapter 03's gpu sites
DEFAULT_GEMMA_LAYERS = (12,)            # chapter 04's gpu site


def is_fixture(model) -> bool:
    """True when `model` (a transformers model, its config, or an `LM`) is a random-weight fixture."""
    cfg = getattr(getattr(model, "hf", model), "config", getattr(model, "hf", model))
    return bool(getattr(cfg, FIXTURE_MARKER, False))


# --------------------------------------------------------------------------- the cache layout
def commit_of(repo_id: str) -> str:
    """A fixed 40-hex 'commit' per repository (the snapshot folder name)."""
    return hashlib.sha1(f"course-fixture:{repo_id}".encode()).hexdigest()


def repo_snapshot(hub_cache: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in a hub cache, its refs/main pointing at it (created)."""
    repo_dir = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    commit = commit_of(repo_id)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _put(snap: Path, rel: str, src: Path) -> None:
    """Store `src` as a blob (named by its sha256, as the hub client does) and link it from the snapshot."""
    blobs = snap.parent.parent / "blobs"
    blobs.mkdir(exist_ok=True)
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    blob = blobs / h.hexdigest()
    if not blob.exists():
        shutil.move(str(src), blob)
    dst = snap / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        dst.symlink_to(os.path.relpath(blob, dst.parent))
    except OSError:                       # filesystems without symlinks: a copy, as on Windows
        shutil.copyfile(blob, dst)


def _put_dir(snap: Path, src_dir: Path) -> list[str]:
    out = []
    for p in sorted(Path(src_dir).rglob("*")):
        if p.is_file():
            rel = p.relative_to(src_dir).as_posix()
            _put(snap, rel, p)
            out.append(rel)
    return out


# ---------------------------------------------------------------------------- tokenizers
def _corpus_texts(n: int = 3000) -> list[str]:
    from utils.lm import corpora as C
    return C.all_texts(C.review_corpus(n, seed=1))


def _fill(vocab: dict[str, int], merges: list, target: int, alphabet: list[str], seed: int) -> None:
    """Synthetic merges (an existing token + one alphabet symbol, deterministic) until `target` ids."""
    rng = np.random.default_rng(seed)
    tokens = list(vocab)
    while len(vocab) < target:
        a = tokens[int(rng.integers(len(tokens)))]
        b = alphabet[int(rng.integers(len(alphabet)))]
        if len(a) + len(b) > 12 or (a + b) in vocab:
            continue
        vocab[a + b] = len(vocab)
        merges.append((a, b))
        tokens.append(a + b)


def _learnt(tok, trainer) -> tuple[dict[str, int], list]:
    tok.train_from_iterator(_corpus_texts(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    return vocab, [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def byte_bpe(vocab_size: int, eot: str = "<|endoftext|>", seed: int = 0):
    """GPT-2's tokenizer kind: a byte-level BPE with exactly `vocab_size` ids, `eot` the last:
    merges learnt on the course corpora, then synthetic merges up to the size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    vocab, merges = _learnt(tok, trainers.BpeTrainer(
        vocab_size=4000, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2))
    _fill(vocab, merges, vocab_size - 1, sorted(vocab, key=vocab.get)[:256], seed)
    vocab[eot] = vocab_size - 1
    out = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    out.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    out.decoder = decoders.ByteLevel()
    out.add_special_tokens([eot])
    if out.get_vocab_size() != vocab_size:
        raise CourseError(f"fixture tokenizer has {out.get_vocab_size()} ids, wanted {vocab_size}")
    return out, vocab, merges


GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def sentencepiece_bpe(vocab_size: int, seed: int = 0):
    """Gemma's tokenizer kind (what transformers' GemmaTokenizer rebuilds from tokenizer.json):
    spaces normalised to "▁", BPE with byte fallback, ids 0-4 <pad> <eos> <bos> <unk> <mask>,
    then the 256 byte tokens <0x00>..<0xFF>, then pieces learnt on the course corpora and
    synthetic merges up to `vocab_size` ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    learnt, merges = _learnt(tok, trainers.BpeTrainer(vocab_size=4000, show_progress=False, min_frequency=2))
    vocab = {s: i for i, s in enumerate(GEMMA_SPECIALS)}
    vocab.update({f"<0x{b:02X}>": len(GEMMA_SPECIALS) + b for b in range(256)})
    for t in learnt:
        vocab.setdefault(t, len(vocab))
    alphabet = sorted(t for t in learnt if len(t) == 1)
    _fill(vocab, merges, vocab_size, alphabet, seed)
    out = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    out.normalizer = normalizers.Replace(" ", "▁")
    out.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    out.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    out.add_special_tokens(GEMMA_SPECIALS)
    out.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", 2)])
    if out.get_vocab_size() != vocab_size:
        raise CourseError(f"fixture tokenizer has {out.get_vocab_size()} ids, wanted {vocab_size}")
    return out


# ---------------------------------------------------------------------------------- GPT-2
def write_gpt2(hub_cache: Path, seed: int = 0) -> dict:
    """GPT-2 small at full shape with random weights, and a GPT-2-sized tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    snap = repo_snapshot(hub_cache, GPT2_REPO)
    eot = "<|endoftext|>"
    tok, vocab, merges = byte_bpe(50257, eot, seed=seed)
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                     bos_token_id=50256, eos_token_id=50256, architectures=["GPT2LMHeadModel"],
                     n_ctx=1024)   # the hub config.json still has the legacy n_ctx, which TransformerLens reads
    setattr(cfg, FIXTURE_MARKER, MARKER_TEXT)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    with tempfile.TemporaryDirectory(dir=hub_cache) as d:
        model.save_pretrained(d)
        del model
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot,
                                       model_max_length=1024)
        fast.save_pretrained(d)
        tc = json.loads((Path(d) / "tokenizer_config.json").read_text())
        tc.update(tokenizer_class="GPT2Tokenizer", add_prefix_space=False, model_max_length=1024)
        (Path(d) / "tokenizer_config.json").write_text(json.dumps(tc, indent=1))
        (Path(d) / "vocab.json").write_text(json.dumps(vocab))
        (Path(d) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
        files = _put_dir(snap, Path(d))
    return {"repo": GPT2_REPO, "files": files, "shape": "full (124M parameters)"}


def write_gpt2_saes(hub_cache: Path, layers=DEFAULT_GPT2_LAYERS, seed: int = 0) -> dict:
    """gpt2-small-res-jb at full shape for `layers`: cfg.json as the hub repository has it
    (pre-6.0 SAELens format), sae_weights.safetensors and sparsity.safetensors."""
    from safetensors.torch import save_file

    snap = repo_snapshot(hub_cache, GPT2_SAE_REPO)
    files = []
    for layer in layers:
        hook = f"blocks.{layer}.hook_resid_pre"
        cfg = {"model_name": "gpt2-small", "hook_point": hook, "hook_point_layer": layer,
               "hook_point_head_index": None, "dataset_path": "Skylion007/openwebtext",
               "is_dataset_tokenized": False, "context_size": 128, "use_cached_activations": False,
               "d_in": 768, "d_sae": GPT2_SAE_D, "b_dec_init_method": "geometric_median",
               "expansion_factor": 32, "activation_fn": "relu", "normalize_sae_decoder": True,
               "apply_b_dec_to_input": True, "dtype": "torch.float32", "device": "cpu",
               "prepend_bos": True, "seed": 42, FIXTURE_MARKER: MARKER_TEXT}
        g = torch.Generator().manual_seed(seed + layer)
        w_dec = torch.randn(GPT2_SAE_D, 768, generator=g)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        weights = {"W_enc": w_dec.T.contiguous(), "W_dec": w_dec, "b_enc": torch.zeros(GPT2_SAE_D),
                   "b_dec": torch.zeros(768)}
        with tempfile.TemporaryDirectory(dir=hub_cache) as d:
            (Path(d) / hook).mkdir()
            (Path(d) / hook / "cfg.json").write_text(json.dumps(cfg, indent=1))
            save_file(weights, str(Path(d) / hook / "sae_weights.safetensors"))
            save_file({"sparsity": torch.full((GPT2_SAE_D,), -3.0)}, str(Path(d) / hook / "sparsity.safetensors"))
            files += _put_dir(snap, Path(d))
    return {"repo": GPT2_SAE_REPO, "files": files, "shape": f"full (768 x {GPT2_SAE_D})"}


# --------------------------------------------------------------------------------- Gemma
def write_gemma(hub_cache: Path, width: str = "reduced", seed: int = 0) -> dict:
    """Gemma-2-2B's architecture class (Gemma2ForCausalLM, 26 layers, vocabulary 256000, a
    BOS-prepending tokenizer) in bfloat16, at full or reduced width (see the module docstring)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast

    dims = GEMMA_FULL if width == "full" else GEMMA_REDUCED
    snap = repo_snapshot(hub_cache, GEMMA_REPO)
    tok = sentencepiece_bpe(256000, seed=seed)
    cfg = Gemma2Config(vocab_size=256000, num_hidden_layers=26, max_position_embeddings=8192,
                       pad_token_id=0, eos_token_id=1, bos_token_id=2, sliding_window=4096,
                       attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                       hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256,
                       architectures=["Gemma2ForCausalLM"], dtype="bfloat16", **dims)
    setattr(cfg, FIXTURE_MARKER, MARKER_TEXT + f" ({width} width)")
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = Gemma2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    with tempfile.TemporaryDirectory(dir=hub_cache) as d:
        model.save_pretrained(d)
        del model
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                       pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                       model_max_length=8192)
        fast.save_pretrained(d)
        tc = json.loads((Path(d) / "tokenizer_config.json").read_text())
        tc.update(tokenizer_class="GemmaTokenizer", add_bos_token=True, add_eos_token=False)
        (Path(d) / "tokenizer_config.json").write_text(json.dumps(tc, indent=1))
        files = _put_dir(snap, Path(d))
    return {"repo": GEMMA_REPO, "files": files, "shape": f"{width} width (d_model {dims['hidden_size']})",
            "d_model": dims["hidden_size"]}


def gemma_scope_folder(layer: int) -> str:
    """The repository folder SAELens maps `layer_{layer}/width_16k/canonical` to."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory()["gemma-scope-2b-pt-res-canonical"].saes_map
    return lookup[f"layer_{layer}/width_16k/canonical"]


def write_gemma_scope(hub_cache: Path, d_model: int, layers=DEFAULT_GEMMA_LAYERS, seed: int = 0) -> dict:
    """Gemma Scope's canonical 16k residual JumpReLU SAE (params.npz with w_enc, w_dec, b_enc,
    b_dec, threshold) at d_in = `d_model`, in the folder SAELens resolves the canonical id to."""
    snap = repo_snapshot(hub_cache, GEMMA_SCOPE_REPO)
    files = []
    for layer in layers:
        folder = gemma_scope_folder(layer)
        rng = np.random.default_rng(seed + layer)
        w_dec = rng.standard_normal((GEMMA_SCOPE_D, d_model), dtype=np.float32)
        w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
        with tempfile.TemporaryDirectory(dir=hub_cache) as d:
            (Path(d) / folder).mkdir(parents=True)
            np.savez(Path(d) / folder / "params.npz", w_enc=np.ascontiguousarray(w_dec.T), w_dec=w_dec,
                     b_enc=np.zeros(GEMMA_SCOPE_D, np.float32), b_dec=np.zeros(d_model, np.float32),
                     threshold=np.full(GEMMA_SCOPE_D, 0.05, np.float32))
            files += _put_dir(snap, Path(d))
    return {"repo": GEMMA_SCOPE_REPO, "files": files, "shape": f"{d_model} x {GEMMA_SCOPE_D}"}


# ----------------------------------------------------------------------------------- all
def write_fixtures(out: str | os.PathLike, gpt2_layers=DEFAULT_GPT2_LAYERS, gemma: str = "reduced",
                   gemma_layers=DEFAULT_GEMMA_LAYERS, seed: int = 0) -> dict:
    """Write every fixture under `out` (an HF_HOME: files go to `out/hub`); returns a summary."""
    if gemma not in ("reduced", "full", "none"):
        raise CourseError(f"gemma must be 'reduced', 'full' or 'none', got {gemma!r}")
    bad = [layer for layer in gpt2_layers if not 0 <= int(layer) < 12]
    if bad:
        raise CourseError(f"GPT-2 small has layers 0-11: drop {bad} from the SAE layers")
    home = Path(out).resolve()
    hub = home / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    done = [write_gpt2(hub, seed), write_gpt2_saes(hub, tuple(gpt2_layers), seed)]
    if gemma != "none":
        g = write_gemma(hub, gemma, seed)
        # Gemma Scope at its full shape (d_in 2304, 0.3 GB a layer): SAELens' loader hard-codes d_in
        done += [g, write_gemma_scope(hub, GEMMA_FULL["hidden_size"], tuple(gemma_layers), seed)]
    for module, fn in AGENT_FIXTURES:   # released RL agents, written by the writer beside their loader
        done.append(getattr(importlib.import_module(module), fn)(hub, seed=seed))
    # chapter 10's released RLHF pair and reward model (reduced width)
    done += importlib.import_module("utils.rlhf.released").write_released_fixtures(hub, seed=seed)
    (home / "FIXTURES.json").write_text(json.dumps({FIXTURE_MARKER: MARKER_TEXT, "repos": done}, indent=1))
    return {"hf_home": str(home), "repos": done, "seconds": round(time.time() - t0, 1)}


def env_for(hf_home: str | os.PathLike) -> dict[str, str]:
    """The environment variables that point the course (and every HF library) at the fixtures."""
    return {"HF_HOME": str(Path(hf_home).resolve()), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
