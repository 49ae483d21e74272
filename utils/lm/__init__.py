"""The offline language-model substrate: small LMs, a tokenizer, rewards and SAEs trained
here, behind the same API as hub models (GPT-2 + gpt2-small-res-jb, Gemma-2-2B + Gemma Scope).

    from utils.lm import load_model, load_sae
    lm = load_model("tiny-reviews")          # lm.hf (transformers), lm.tl (TransformerLens), lm.tokenizer
    sae = load_sae("tiny-reviews")           # sae_lens.SAE on blocks.1.hook_resid_pre

Modules: corpora (deterministic text generators, tic-tac-toe minimax), tokenizer, models
(GPT2LMHeadModel training / eval / generation), convert (HF -> HookedTransformer), saes
(SAELens training, quality metrics, top-activating contexts), rewards, api, artifacts
(`python -m utils.lm build [NAME...]`).
"""
from utils.lm.api import LM, available_models, load_model, load_sae

__all__ = ["LM", "available_models", "load_model", "load_sae"]
