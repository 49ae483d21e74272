"""HF `GPT2LMHeadModel` -> TransformerLens `HookedTransformer`.

`HookedTransformer.from_pretrained` only accepts names from TransformerLens's list of
official models, so for our own models we build the `HookedTransformerConfig` from the
GPT-2 config and reuse TransformerLens's own GPT-2 weight converter. The usual
processing (fold LayerNorm, centre writing weights and unembedding, fold value biases)
is applied; it changes no log-prob (tests check agreement to 1e-4).
"""
from __future__ import annotations

import warnings

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
from transformers import GPT2LMHeadModel, PreTrainedTokenizerBase

from utils.core import CourseError


def hooked_config(hf_model: GPT2LMHeadModel, name: str = "tiny-gpt2") -> HookedTransformerConfig:
    c = hf_model.config
    if c.model_type != "gpt2":
        raise CourseError(f"to_hooked converts GPT-2-architecture models, got model_type={c.model_type!r}")
    return HookedTransformerConfig(
        d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner if c.n_inner is not None else 4 * c.n_embd, n_layers=c.n_layer,
        n_ctx=c.n_positions, eps=c.layer_norm_epsilon, d_vocab=c.vocab_size,
        act_fn=c.activation_function, normalization_type="LN", positional_embedding_type="standard",
        use_attn_scale=c.scale_attn_weights, scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx,
        original_architecture="GPT2LMHeadModel", model_name=name, default_prepend_bos=True,
        dtype=torch.float32, device="cpu",
    )


def to_hooked(hf_model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase | None = None,
              name: str = "tiny-gpt2", device: str | torch.device = "cpu") -> HookedTransformer:
    """A HookedTransformer with the same function as `hf_model` (weights are copied)."""
    cfg = hooked_config(hf_model, name)
    with warnings.catch_warnings():
        # TransformerLens 3.x announces HookedTransformer's removal in 4.0; the course pins <4
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state = {k: v.detach().clone().float() for k, v in convert_gpt2_weights(hf_model, cfg).items()}
    model.load_and_process_state_dict(state, fold_ln=True, center_writing_weights=True, center_unembed=True,
                                      fold_value_biases=True)
    model.to(device)
    model.eval()
    return model
