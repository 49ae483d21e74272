"""The shared piece of every course transformer that reads RL tokens instead of words.

`EmbeddedTokensTransformer` is a TransformerLens `HookedTransformer` whose subclass embeds
its own integer tokens (`embed_tokens(tokens) -> residual stream [B, P, d_model]`); its
forward runs the blocks on that stream with `start_at_layer=0`, so `run_with_cache`,
`run_with_hooks` and every `utils.interp` tool work unchanged. A float input is a residual
stream passed back in by TransformerLens internals and goes straight to the blocks.
Used by `ADTransformer` (Algorithm Distillation) and `DecisionTransformer`.
"""
from __future__ import annotations

import warnings

from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig


def hooked_transformer_config(**kwargs) -> HookedTransformerConfig:
    """A HookedTransformerConfig for a custom-embedding model (one dummy word, no BOS)."""
    return HookedTransformerConfig(d_vocab=1, act_fn="gelu", normalization_type="LN",
                                   default_prepend_bos=False, **kwargs)


class EmbeddedTokensTransformer(HookedTransformer):
    """A HookedTransformer fed by `embed_tokens` (defined by the subclass)."""

    def __init__(self, tl_cfg: HookedTransformerConfig):
        with warnings.catch_warnings():  # TransformerLens 3.x flags HookedTransformer as deprecated (4.x)
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(tl_cfg)

    def embed_tokens(self, tokens: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, tokens: Tensor, **kwargs) -> Tensor:  # type: ignore[override]
        if tokens.is_floating_point():  # a residual stream passed by TransformerLens internals
            return super().forward(tokens, **kwargs)
        return super().forward(self.embed_tokens(tokens), start_at_layer=0, **kwargs)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
