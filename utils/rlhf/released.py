"""Released RLHF models for chapter 10 (problems 8.10 and 8.12): a base model and its RL-tuned
version, and a released reward model, all as TransformerLens models.

- The policy pair: `lvwerra/gpt2-imdb` (GPT-2 small fine-tuned on IMDB reviews) and
  `lvwerra/gpt2-imdb-pos-v2`, the same model tuned with TRL's PPO to write positive reviews (the
  reward was a sentiment classifier's logit; TRL's `gpt2-sentiment` example). Both are GPT-2
  small, converted with the course's GPT-2 converter (`utils.lm.convert.to_hooked`).
- The reward model: OpenAssistant's `oasst-rm-2.1-pythia-1.4b-epoch-2.5`, a Pythia-1.4B
  (GPT-NeoX) body with a scalar head `out_proj` read at the last token ("pooling": "last");
  the course converts the body with TransformerLens's GPT-NeoX weight converter and keeps the head
  as a score direction (`HookedNeoXRewardModel`), so the chapter's reward-model tools apply:
  `reward_components`, `component_attribution`, token occlusion and counterfactual edits.

    base, tuned, tok = load_policy_pair()           # the gpu profile; cpu with USE_HUB = True
    rm = load_released_rm()                         # rm.score(texts), rm.tl, rm.w, rm.b, rm.tokens

The larger step would be CarperAI's summarize-from-feedback trio (GPT-J-6B SFT, reward model and
PPO policy): the reward model is one 11.8 GB `pytorch_model.bin` with no config or tokenizer, and
GPT-J at 6B parameters needs about 12 GB in float16, so a T4 holds it only for short batches of
inference, never beside its policy (the course's research notes, real_agents.md).

Loading needs the hub the first time; offline, with the files not in the local cache, every
loader stops in one line naming the offline alternative. `write_released_fixtures(hub_cache)`
writes REDUCED-WIDTH models with random weights in the hub's cache layout (the repositories'
file names and config keys, `utils.lm.fixtures.FIXTURE_MARKER` in each config), so the loaders,
the converters and the chapter's released section run offline (tests/test_rlhf_released.py,
`make rehearse`). Licences (data/manifest.json, "released"): the gpt2-imdb models: none stated;
the OpenAssistant reward model: not checked offline here (read the model card before use; its
Pythia base is Apache-2.0).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from utils.core import CourseError
from utils.rlhf.analysis import HookedRewardModel

BASE_REPO = "lvwerra/gpt2-imdb"
TUNED_REPO = "lvwerra/gpt2-imdb-pos-v2"
RM_REPO = "OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OFFLINE_HINT = ("run chapter 10 without the hub (PROFILE = 'cpu', USE_HUB = False): its own pipeline trains the "
                "base, the reward model and the tuned policy offline; or `python -m utils.lm fixtures` and "
                "`make rehearse` for random-weight stand-ins")
# what the released reward model expects around a reply (OpenAssistant's chat format)
PROMPTER, ASSISTANT, EOT = "<|prompter|>", "<|assistant|>", "<|endoftext|>"


def _offline() -> bool:
    import huggingface_hub.constants as hc

    from utils.lm.api import hub_offline_env

    return bool(hc.HF_HUB_OFFLINE) or hub_offline_env()


def _snapshot(repo: str) -> Path:
    """The local folder of `repo` (downloaded when the hub is reachable and not disabled)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=_offline(),
                                      allow_patterns=["*.json", "*.txt", "*.model", *WEIGHT_FILES, "*.index.json"]))
    except Exception as e:  # noqa: BLE001 - every failure to find the files gets the same one-line advice
        raise CourseError(f"{repo} is not in the local Hugging Face cache and the hub is unavailable "
                          f"({type(e).__name__}): {OFFLINE_HINT}") from None


def _state_dict(folder: Path) -> dict[str, Tensor]:
    """The weights of a hub folder: model.safetensors, pytorch_model.bin, or their sharded index."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).exists():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            out = {}
            for s in shards:
                out.update(_load_file(folder / s))
            return out
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            return _load_file(folder / name)
    raise CourseError(f"{folder} holds none of {WEIGHT_FILES}: the download is incomplete; delete the folder and "
                      "load again")


def _load_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def is_fixture_folder(folder: Path) -> bool:
    from utils.lm.fixtures import FIXTURE_MARKER
    return bool(json.loads((Path(folder) / "config.json").read_text()).get(FIXTURE_MARKER))


# ------------------------------------------------------------------------------ the policy pair
def load_policy_pair(device: str = "cpu"):
    """(base, tuned, tokenizer): `lvwerra/gpt2-imdb` and its PPO-tuned `lvwerra/gpt2-imdb-pos-v2` as
    HookedTransformers (the same tokenizer, GPT-2's)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from utils.lm.convert import to_hooked

    out = []
    tok = None
    for repo in (BASE_REPO, TUNED_REPO):
        folder = _snapshot(repo)
        hf = GPT2LMHeadModel.from_pretrained(folder).eval()
        if tok is None:
            tok = AutoTokenizer.from_pretrained(folder)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        out.append(to_hooked(hf, tok, name=repo.split("/")[-1], device=device))
        out[-1].fixture = is_fixture_folder(folder)
    return out[0], out[1], tok


# ------------------------------------------------------------------------------ the reward model
def neox_config(hf_cfg) -> "HookedTransformerConfig":  # noqa: F821
    """A TransformerLens config for a GPT-NeoX (Pythia) body, as TransformerLens builds it for
    GPTNeoXForCausalLM: parallel attention and MLP, rotary embeddings on rotary_pct of each head."""
    from transformer_lens import HookedTransformerConfig

    d_head = hf_cfg.hidden_size // hf_cfg.num_attention_heads
    rope = getattr(hf_cfg, "rope_parameters", None) or {}      # transformers 5 keeps them here
    pct = rope.get("partial_rotary_factor", getattr(hf_cfg, "rotary_pct", 0.25))
    base = rope.get("rope_theta", getattr(hf_cfg, "rotary_emb_base", 10000))
    return HookedTransformerConfig(
        d_model=hf_cfg.hidden_size, d_head=d_head, n_heads=hf_cfg.num_attention_heads,
        d_mlp=hf_cfg.intermediate_size, n_layers=hf_cfg.num_hidden_layers, n_ctx=hf_cfg.max_position_embeddings,
        eps=hf_cfg.layer_norm_eps, d_vocab=hf_cfg.vocab_size, act_fn=hf_cfg.hidden_act, use_attn_scale=True,
        scale_attn_by_inverse_layer_idx=False, parallel_attn_mlp=bool(hf_cfg.use_parallel_residual),
        positional_embedding_type="rotary", rotary_dim=round(pct * d_head), rotary_base=int(base),
        rotary_adjacent_pairs=False, normalization_type="LN", original_architecture="GPTNeoXForCausalLM",
        model_name="oasst-rm-pythia", default_prepend_bos=False, dtype=torch.float32, device="cpu")


@dataclass
class HookedNeoXRewardModel:
    """A released GPT-NeoX reward model as the chapter's reward-model interface: `tl` (the body as a
    HookedTransformer, no LayerNorm folding), the score direction `w` [d_model] and offset `b`:
    reward = tl's ln_final.hook_normalized at the last token . w + b."""

    tl: object
    w: Tensor
    b: float
    tokenizer: object
    fixture: bool = False

    def tokens(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(ids [n, T] right-padded, last [n]: each text's last token)."""
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right",
                             add_special_tokens=False)
        return enc["input_ids"], enc["attention_mask"].sum(-1) - 1

    # scoring reads ln_final at each row's last token, exactly as the chapter's own reward model does
    score_ids = HookedRewardModel.score_ids
    score = HookedRewardModel.score


def format_reply(prompt: str, reply: str) -> str:
    """OpenAssistant's format: the prompter's turn, then the assistant's reply being scored."""
    return f"{PROMPTER}{prompt}{EOT}{ASSISTANT}{reply}{EOT}"


def neox_reward_model(state: dict[str, Tensor], hf_cfg, tokenizer, fixture: bool = False) -> HookedNeoXRewardModel:
    """Build the hooked reward model from a `GPTNeoXRewardModel` state dict (keys `gpt_neox.*`,
    `out_proj.weight` [1, d], `out_proj.bias` [1])."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.neox import convert_neox_weights
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    body = {k[len("gpt_neox."):]: v for k, v in state.items() if k.startswith("gpt_neox.")}
    if not body or "out_proj.weight" not in state:
        raise CourseError(f"not a GPT-NeoX reward model: expected keys gpt_neox.* and out_proj.weight, got "
                          f"{sorted(state)[:4]} ...")
    cfg_dict = {k: v for k, v in hf_cfg.to_dict().items() if k not in ("model_type", "architectures", "pooling")}
    lm = GPTNeoXForCausalLM(GPTNeoXConfig(**cfg_dict))
    missing, unexpected = lm.gpt_neox.load_state_dict({k: v.float() for k, v in body.items()}, strict=False)
    missing = [k for k in missing if not any(s in k for s in ("rotary_emb", "masked_bias", "attention.bias"))]
    if missing:
        raise CourseError(f"the reward model's body is missing {missing[:3]}: the download is incomplete or this is "
                          "not a GPT-NeoX reward model")
    with torch.no_grad():
        unembed = lm.lm_head if hasattr(lm, "lm_head") else lm.embed_out   # renamed in transformers 5.14
        unembed.weight.zero_()          # the reward model has no unembedding; the score head replaces it
    cfg = neox_config(lm.config)
    with torch.random.fork_rng(devices=[]):
        tl = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    tl.load_and_process_state_dict(convert_neox_weights(lm, cfg), fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False, refactor_factored_attn_matrices=False)
    tl.eval()
    head = state["out_proj.weight"].float().reshape(-1)
    bias = float(state["out_proj.bias"].float().reshape(-1)[0]) if "out_proj.bias" in state else 0.0
    w = (tl.ln_final.w.detach() * head).clone()
    b = float(tl.ln_final.b.detach() @ head) + bias
    return HookedNeoXRewardModel(tl, w, b, tokenizer, fixture)


def load_released_rm(repo: str = RM_REPO) -> HookedNeoXRewardModel:
    """OpenAssistant's Pythia reward model (or a fixture in its layout) as a HookedNeoXRewardModel."""
    from transformers import AutoTokenizer, GPTNeoXConfig

    folder = _snapshot(repo)
    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") not in ("gpt_neox_reward_model", "gpt_neox"):
        raise CourseError(f"{repo} is a {raw.get('model_type')!r} model; load_released_rm reads GPT-NeoX reward models")
    hf_cfg = GPTNeoXConfig(**{k: v for k, v in raw.items() if k not in ("model_type", "architectures", "pooling")})
    if raw.get("pooling", "last") != "last":
        raise CourseError(f"{repo} pools by {raw.get('pooling')!r}; the course reads last-token reward models")
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return neox_reward_model(_state_dict(folder), hf_cfg, tok, fixture=is_fixture_folder(folder))


# --------------------------------------------------------------------------------- fixtures
GPT2_REDUCED = dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, n_ctx=256)
NEOX_REDUCED = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                    max_position_embeddings=256, rotary_pct=0.25, use_parallel_residual=True, hidden_act="gelu",
                    layer_norm_eps=1e-5)
FIXTURE_VOCAB = 2048


def write_released_fixtures(hub_cache: Path, seed: int = 0) -> list[dict]:
    """Random-weight stand-ins for the three repositories, reduced in width (config keys and file names
    as on the hub; FIXTURE_MARKER in each config.json)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    from utils.lm.fixtures import FIXTURE_MARKER, MARKER_TEXT, _put_dir, byte_bpe, repo_snapshot

    tok, _, _ = byte_bpe(FIXTURE_VOCAB, EOT, seed=seed)
    out = []
    for i, repo in enumerate((BASE_REPO, TUNED_REPO)):
        cfg = GPT2Config(vocab_size=FIXTURE_VOCAB, bos_token_id=FIXTURE_VOCAB - 1, eos_token_id=FIXTURE_VOCAB - 1,
                         architectures=["GPT2LMHeadModel"], **GPT2_REDUCED)
        setattr(cfg, FIXTURE_MARKER, MARKER_TEXT)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            model = GPT2LMHeadModel(cfg)
        with tempfile.TemporaryDirectory(dir=hub_cache) as d:
            model.save_pretrained(d)
            PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                    model_max_length=256).save_pretrained(d)
            files = _put_dir(repo_snapshot(hub_cache, repo), Path(d))
        out.append({"repo": repo, "files": files, "shape": f"reduced width {GPT2_REDUCED}"})
    # the reward model: GPTNeoXRewardModel's keys (gpt_neox.*, out_proj), its config type and pooling
    neox = GPTNeoXConfig(vocab_size=FIXTURE_VOCAB, bos_token_id=0, eos_token_id=FIXTURE_VOCAB - 1, **NEOX_REDUCED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7)
        body = GPTNeoXForCausalLM(neox).gpt_neox
        head = torch.nn.Linear(neox.hidden_size, 1)
    state = {f"gpt_neox.{k}": v.clone() for k, v in body.state_dict().items()}
    state.update({"out_proj.weight": head.weight.detach().clone(), "out_proj.bias": head.bias.detach().clone()})
    raw = neox.to_dict()
    raw.update(model_type="gpt_neox_reward_model", architectures=["GPTNeoXRewardModel"], pooling="last")
    raw[FIXTURE_MARKER] = MARKER_TEXT
    with tempfile.TemporaryDirectory(dir=hub_cache) as d:
        torch.save(state, Path(d) / "pytorch_model.bin")
        (Path(d) / "config.json").write_text(json.dumps(raw, indent=1))
        PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, unk_token=EOT, pad_token=EOT,
                                model_max_length=256).save_pretrained(d)
        files = _put_dir(repo_snapshot(hub_cache, RM_REPO), Path(d))
    out.append({"repo": RM_REPO, "files": files, "shape": f"reduced width {NEOX_REDUCED}"})
    return out
