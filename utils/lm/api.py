"""One way to load a language model or an SAE, from either source.

    lm = load_model("tiny-reviews")      # embedded: trained here, shipped in data/lm/
    lm = load_model("gpt2")              # hub: GPT-2 small (gpu profile, needs the network)
    lm.hf, lm.tokenizer                  # transformers PreTrainedModel + tokenizer (TRL trains these)
    lm.tl                                # TransformerLens form (hooks, caches, SAEs): a HookedTransformer;
                                         # for Gemma-2-2B a TransformerBridge around lm.hf (no weight copy)
    lm.path                              # local dir or hub id (TRL rebuilds its reference model from it)
    sae = load_sae("tiny-reviews")       # sae_lens.SAE on the model's middle residual stream
    sae = load_sae("gpt2", layer=8)      # gpt2-small-res-jb, blocks.8.hook_resid_pre
    sae = load_sae("gemma-2-2b", layer=12)  # Gemma Scope 16k canonical, layer 12

Licences: the embedded models and SAEs are the course's own (MIT, data/manifest.json). The
released ones keep theirs, listed in RELEASED below and in the manifest's "released" section:
GPT-2 small (openai-community/gpt2): MIT; Gemma-2-2B and -it (google/gemma-2-2b[-it]): the
Gemma Terms of Use, gated (accept them on the model page); the GPT-2 small residual SAEs
(gpt2-small-res-jb, jbloom/GPT2-Small-SAEs-Reformatted): MIT; Gemma Scope
(google/gemma-scope-2b-pt-res): CC BY 4.0.

Local artifacts are verified against data/manifest.json (sha256) before loading. A hub
name fails at once when the hub cannot be used (HF_HUB_OFFLINE set, or huggingface.co
not reachable within a couple of seconds) and the files are not already cached, with a
message naming the embedded alternative: never a hang or a deep library traceback.
"""
from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

from utils.checkpoints import DATA_DIR, CheckpointError, artifact_path, read_manifest, sha256_file
from utils.core import CourseError, get_device
from utils.lm.convert import to_hooked
from utils.lm.tokenizer import load_tokenizer

LOCAL_MODELS = ("tiny-reviews", "tiny-ttt", "tiny-qa")
DEFAULT_SAE_LAYER = 1   # blocks.1.hook_resid_pre: the middle of the 2-layer models

# "frozen": a model the chapters only run (Gemma, chapter 04) loads in half precision on a GPU
# (hub_dtype); GPT-2 is fine-tuned by chapter 03 (TRL, Adam), so it stays float32 everywhere.
HUB_MODELS: dict[str, dict[str, Any]] = {
    "gpt2": {"local": "tiny-reviews", "sae_release": "gpt2-small-res-jb", "frozen": False,
             "sae_id": "blocks.{layer}.hook_resid_pre", "default_layer": 8, "tl_name": "gpt2"},
    "gemma-2-2b": {"local": "tiny-qa", "sae_release": "gemma-scope-2b-pt-res-canonical", "frozen": True,
                   "sae_id": "layer_{layer}/width_{width}/canonical", "default_layer": 12, "tl_name": "gemma-2-2b",
                   "tl_form": "bridge"},
    "gemma-2-2b-it": {"local": "tiny-qa", "sae_release": "gemma-scope-2b-pt-res-canonical", "frozen": True,
                      "sae_id": "layer_{layer}/width_{width}/canonical", "default_layer": 12, "tl_name": "gemma-2-2b-it",
                      "tl_form": "bridge"},
}
_HUB_IDS = {"gpt2": "gpt2", "gemma-2-2b": "google/gemma-2-2b", "gemma-2-2b-it": "google/gemma-2-2b-it"}

# The released models and SAEs these loaders download, with the licence on each model card
# (data/manifest.json "released" repeats this table; tests/test_checkpoints.py holds them equal).
_GEMMA_TERMS = "Gemma Terms of Use (https://ai.google.dev/gemma/terms); gated: accept them on the model page"
RELEASED: dict[str, dict[str, str]] = {
    "gpt2": {"kind": "model", "source": "https://huggingface.co/openai-community/gpt2", "licence": "MIT",
             "loader": "utils.lm.load_model('gpt2')"},
    "gemma-2-2b": {"kind": "model", "source": "https://huggingface.co/google/gemma-2-2b", "licence": _GEMMA_TERMS,
                   "loader": "utils.lm.load_model('gemma-2-2b')"},
    "gemma-2-2b-it": {"kind": "model", "source": "https://huggingface.co/google/gemma-2-2b-it", "licence": _GEMMA_TERMS,
                      "loader": "utils.lm.load_model('gemma-2-2b-it')"},
    "gpt2-small-res-jb": {"kind": "sae", "source": "https://huggingface.co/jbloom/GPT2-Small-SAEs-Reformatted",
                          "licence": "MIT", "loader": "utils.lm.load_sae('gpt2', layer)"},
    "gemma-scope-2b-pt-res-canonical": {"kind": "sae", "source": "https://huggingface.co/google/gemma-scope-2b-pt-res",
                                        "licence": "CC-BY-4.0", "loader": "utils.lm.load_sae('gemma-2-2b', layer)"},
}


def model_artifact(name: str) -> str:
    return f"lm/{name}"


def sae_artifact(name: str, layer: int) -> str:
    return f"lm/{name}/sae-L{layer}"


@dataclass
class LM:
    """A causal LM in both forms. `hf` and `tokenizer` are what transformers and TRL use;
    `tl` (built on first use) is the TransformerLens form with the same log-probs."""
    name: str
    source: str                     # "local" or "hub"
    hf: Any                         # transformers.PreTrainedModel
    tokenizer: Any                  # transformers.PreTrainedTokenizerFast
    path: str                       # local directory or hub id
    entry: dict | None = None       # manifest entry (config, metrics) of a local model
    _tl: Any = field(default=None, repr=False)

    @property
    def tl(self):
        if self._tl is None:
            if self.source == "local":
                self._tl = to_hooked(self.hf, self.tokenizer, name=self.name, device=self.hf.device)
            elif HUB_MODELS[self.name].get("tl_form") == "bridge":
                self._tl = _bridge(self)
            else:
                _check_tl_shape(self)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._tl = HookedTransformer.from_pretrained(
                        HUB_MODELS[self.name]["tl_name"], hf_model=self.hf, tokenizer=self.tokenizer,
                        device=self.hf.device, dtype=self.hf.dtype)
        return self._tl


def _bridge(lm: "LM"):
    """TransformerLens' TransformerBridge around `lm.hf` ITSELF, in compatibility mode without
    weight processing: HookedTransformer's hook names (blocks.12.hook_resid_post, ...) and methods
    (to_tokens, run_with_cache, run_with_hooks), on the transformers forward pass. A
    HookedTransformer converts a second copy of the weights: for Gemma-2-2B in bfloat16 its
    conversion passed 17 GiB of CPU memory (12 GiB anonymous) in the offline rehearsal, and on a T4
    the two copies need about 11 GiB of the 15; the bridge adds nothing (6 GiB peak on CPU) and its
    residual stream equals the HF hidden states exactly, the activations Gemma Scope was trained on."""
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl = TransformerBridge.boot_transformers(lm.path, hf_model=lm.hf, tokenizer=lm.tokenizer,
                                                 dtype=lm.hf.dtype, device=lm.hf.device)
        tl.enable_compatibility_mode(no_processing=True)
    return tl


def _check_tl_shape(lm: "LM") -> None:
    """TransformerLens builds a hub model from its OWN config of that name (Gemma-2-2B's widths
    are hard-coded in it) and allocates it before loading the weights: refuse at once, in one
    line, when the loaded model has other shapes (a reduced-width rehearsal fixture), instead of
    allocating the full-size model and failing deep inside the weight conversion."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    cfg = get_pretrained_model_config(HUB_MODELS[lm.name]["tl_name"])
    hc = lm.hf.config
    want = (cfg.d_model, cfg.n_layers, cfg.d_vocab)
    have = (hc.hidden_size, hc.num_hidden_layers, hc.vocab_size)
    if want != have:
        raise CourseError(
            f"TransformerLens builds {lm.name!r} with (d_model, layers, vocabulary) {want}, but the loaded model has "
            f"{have} (a reduced-width fixture?): its TransformerLens form needs the full shape "
            f"(`python -m utils.lm fixtures --gemma full`, about 16 GiB of free memory)")


# ------------------------------------------------------------------- hub reachability
def hub_offline_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 2.0) -> bool:
    """True if a TCP connection to the hub opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_unavailable(what: str, local: str, why: str) -> CourseError:
    return CourseError(
        f"{what} needs the Hugging Face hub, which is unavailable ({why}), and it is not in the local cache: "
        f"use the embedded alternative {local!r} (load_model({local!r}) / load_sae({local!r})), "
        f"or run where huggingface.co is reachable")


def _hub_mode() -> bool:
    """True to load from the hub, False to use the local cache only (HF_HUB_OFFLINE set, or no connection)."""
    if hub_offline_env():
        return False
    return hub_reachable()


# ------------------------------------------------------------------------ local models
def _verify_files(entry: dict, directory: Path) -> None:
    for rel, sha in entry["config"].get("files", {}).items():
        p = directory / rel
        if not p.exists():
            raise CheckpointError(f"{p} is missing: regenerate it with `{entry['command']}`")
        if sha256_file(p) != sha:
            raise CheckpointError(f"{p} is corrupted (sha256 does not match the manifest): regenerate it with `{entry['command']}`")


def local_dir(artifact: str, data_dir: str | os.PathLike = DATA_DIR) -> tuple[Path, dict]:
    """The verified directory of a local artifact (main file and every listed file) and its manifest entry."""
    main = artifact_path(artifact, data_dir)
    entry = read_manifest(data_dir)["artifacts"][artifact]
    _verify_files(entry, main.parent)
    return main.parent, entry


def hub_dtype(name: str, device) -> torch.dtype:
    """The dtype hub model `name` loads in on `device`. A frozen model (Gemma): on a GPU with native
    bfloat16 (compute capability 8.0+) bfloat16, on older GPUs such as the T4 (7.5) float16
    (gpu_check.T4_DTYPE: bfloat16 is emulated there); on the CPU float32, except in a rehearsal
    of the gpu profile (COURSE_REHEARSE=1), which loads the T4's float16 so that its dtype paths
    and memory estimate are the T4's. A model a chapter fine-tunes (GPT-2): float32 everywhere."""
    from utils.course.gpu_check import T4_DTYPE, rehearsing

    if not HUB_MODELS[name].get("frozen"):
        return torch.float32
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else T4_DTYPE
    return T4_DTYPE if rehearsing("gpu") else torch.float32


def _gated_check(hub_id: str) -> None:
    """Before downloading a gated model that is not cached: one line if this session cannot."""
    from utils.course.gpu_check import GATED_PREFIXES, gated_access, is_cached

    if hub_id.startswith(GATED_PREFIXES) and not is_cached(hub_id):
        status, line = gated_access(hub_id)
        if status != "ok":
            raise CourseError(line)


def load_model(name: str, device: str | None = None, data_dir: str | os.PathLike = DATA_DIR,
               dtype: torch.dtype | None = None) -> LM:
    """The LM `name`: an embedded model (tiny-reviews, tiny-ttt, tiny-qa; the course's, MIT) or a
    hub model: gpt2 (MIT), gemma-2-2b and gemma-2-2b-it (the Gemma Terms of Use, gated). Hub models
    load in `dtype`, by default `hub_dtype(name, device)` (float16 for Gemma on a T4)."""

    dev = get_device(device)
    if name in LOCAL_MODELS:
        d, entry = local_dir(model_artifact(name), data_dir)
        tok = load_tokenizer(d)
        model = GPT2LMHeadModel.from_pretrained(str(d)).to(dev).eval()
        return LM(name, "local", model, tok, str(d), entry)
    if name in HUB_MODELS:
        info = HUB_MODELS[name]
        online = _hub_mode()

        hub_id = _HUB_IDS[name]
        if online:
            _gated_check(hub_id)   # no token, or the licence not accepted: one line before any download
        dtype = dtype or hub_dtype(name, dev)
        try:
            tok = AutoTokenizer.from_pretrained(hub_id, local_files_only=not online)
            model = AutoModelForCausalLM.from_pretrained(hub_id, local_files_only=not online, dtype=dtype)
            model = model.to(dev).eval()
        except Exception as e:  # noqa: BLE001 - any failure here is "the hub model is not available"
            if online:
                raise CourseError(f"could not load hub model {name!r} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                  f"the embedded alternative is {info['local']!r}") from None
            why = "HF_HUB_OFFLINE is set" if hub_offline_env() else "huggingface.co is not reachable"
            raise _hub_unavailable(f"model {name!r}", info["local"], why) from None
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return LM(name, "hub", model, tok, hub_id)
    raise CourseError(f"unknown model {name!r}: embedded models are {', '.join(LOCAL_MODELS)}; "
                      f"hub models are {', '.join(HUB_MODELS)}")


def load_sae(name: str, layer: int | None = None, width: str = "16k", device: str | None = None,
             data_dir: str | os.PathLike = DATA_DIR):
    """The residual-stream SAE of model `name` at `layer` (a `sae_lens.SAE`). Embedded models:
    blocks.{layer}.hook_resid_pre (layer 1 by default). gpt2: gpt2-small-res-jb
    (blocks.{layer}.hook_resid_pre, default 8). gemma-2-2b: Gemma Scope canonical
    (layer_{layer}/width_{width}, default 12). Licences: the embedded SAEs are the course's (MIT),
    gpt2-small-res-jb is MIT, Gemma Scope is CC BY 4.0 (RELEASED)."""


    dev = str(get_device(device))
    if name in LOCAL_MODELS:
        layer = DEFAULT_SAE_LAYER if layer is None else layer
        art = sae_artifact(name, layer)
        artifacts = read_manifest(data_dir, must_exist=True)["artifacts"]
        if art not in artifacts:
            have = sorted(a for a in artifacts if a.startswith(f"lm/{name}/sae-"))
            raise CourseError(f"no SAE for {name!r} at layer {layer}: available {have or 'none'} "
                              f"(train one with utils.lm.saes.train_sae)")
        d, _ = local_dir(art, data_dir)
        return SAE.load_from_disk(str(d), device=dev)
    if name in HUB_MODELS:
        info = HUB_MODELS[name]
        layer = info["default_layer"] if layer is None else layer
        sae_id = info["sae_id"].format(layer=layer, width=width)
        if not _hub_mode() and not sae_cached(info["sae_release"], sae_id):
            # SAELens has no cache-only switch: refuse rather than let it try the network
            # (with the files in the local cache, hf_hub_download reads them offline)
            why = "HF_HUB_OFFLINE is set" if hub_offline_env() else "huggingface.co is not reachable"
            raise _hub_unavailable(f"SAE {info['sae_release']}/{sae_id}", info["local"], why)
        return SAE.from_pretrained(info["sae_release"], sae_id, device=dev)
    raise CourseError(f"unknown model {name!r} for load_sae: embedded models are {', '.join(LOCAL_MODELS)}; "
                      f"hub models are {', '.join(HUB_MODELS)}")


def sae_cached(release: str, sae_id: str) -> bool:
    """True when the files SAELens reads for (release, sae_id) are in the local HF cache:
    cfg.json + sae_weights.safetensors (SAELens format) or params.npz (Gemma Scope)."""
    from huggingface_hub import try_to_load_from_cache
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory().get(release)
    if entry is None or sae_id not in entry.saes_map:
        return False
    folder = entry.saes_map[sae_id]
    names = ["params.npz"] if entry.conversion_func == "gemma_2" else ["cfg.json", "sae_weights.safetensors"]
    return all(isinstance(try_to_load_from_cache(entry.repo_id, f"{folder}/{n}"), str) for n in names)


def available_models() -> dict[str, list[str]]:
    return {"local": list(LOCAL_MODELS), "hub": list(HUB_MODELS)}
