"""The Algorithm Distillation model: a TransformerLens HookedTransformer fed (observation,
previous action, previous reward) embeddings instead of word embeddings.

`ADTransformer` subclasses `HookedTransformer`: its forward embeds tokens [B, T, 3] itself
(passing through the usual `hook_embed` and `hook_pos_embed`) and runs the blocks with
`start_at_layer=0`. Every TransformerLens tool works unchanged: `run_with_cache`,
`run_with_hooks`, hook names such as `blocks.0.attn.hook_pattern` and
`blocks.1.hook_resid_post`, and the helpers in `utils.interp`. The unembedding maps to
action logits.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from transformer_lens import HookedTransformerConfig

from utils.core import CourseError, check_fields
from utils.models.embedded import EmbeddedTokensTransformer


@dataclass
class ADConfig:
    n_obs: int = 81
    n_actions: int = 5
    context_len: int = 160   # tokens (= context episodes x episode length)
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    n_rewards: int = 2       # rewards are small integers in [0, n_rewards)
    grid_size: int | None = 9  # Dark Room: embed a cell as row + column embeddings (None: one vector per observation)
    seed: int = 0

    def validate(self) -> None:
        check_fields(self, positive_int=("n_obs", "n_actions", "context_len", "n_layers", "d_model", "n_heads", "d_mlp",
                                         "n_rewards"), nonneg_int=("seed",))
        if self.d_model % self.n_heads:
            raise CourseError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.grid_size is not None and self.grid_size ** 2 != self.n_obs:
            raise CourseError(f"grid_size {self.grid_size} implies {self.grid_size ** 2} observations but n_obs is {self.n_obs}")


class ADTransformer(EmbeddedTokensTransformer):
    """Action logits [B, T, n_actions] from tokens [B, T, 3] = (obs, prev action, prev reward)."""

    def __init__(self, cfg: ADConfig):
        cfg.validate()
        tl_cfg = HookedTransformerConfig(
            n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
            d_mlp=cfg.d_mlp, n_ctx=cfg.context_len, d_vocab=1, d_vocab_out=cfg.n_actions, act_fn="gelu",
            normalization_type="LN", seed=cfg.seed, default_prepend_bos=False)
        super().__init__(tl_cfg)  # the forward (embed_tokens, then the blocks) is the shared one
        self.ad_cfg = cfg
        if cfg.grid_size is None:
            self.obs_embed = nn.Embedding(cfg.n_obs, cfg.d_model)
        else:  # the observation is a position: its embedding is row embedding + column embedding
            self.obs_embed = GridEmbedding(cfg.grid_size, cfg.d_model)
        self.action_embed = nn.Embedding(cfg.n_actions + 1, cfg.d_model)  # + NONE at episode starts
        self.reward_embed = nn.Embedding(cfg.n_rewards, cfg.d_model)
        for emb in (self.action_embed, self.reward_embed, *self.obs_embed.modules()):
            if isinstance(emb, nn.Embedding):
                nn.init.normal_(emb.weight, std=0.2)
        self.setup()  # register the hook points again now that the module tree is complete

    @property
    def none_action(self) -> int:
        return self.ad_cfg.n_actions

    def check_tokens(self, tokens: Tensor) -> None:
        c = self.ad_cfg
        if tokens.ndim != 3 or tokens.shape[-1] != 3:
            raise CourseError(f"AD tokens must have shape [batch, pos, 3] (obs, prev action, prev reward), got {tuple(tokens.shape)}")
        if tokens.shape[1] > c.context_len:
            raise CourseError(f"context of {tokens.shape[1]} tokens is longer than the model's context_len {c.context_len}: keep the last {c.context_len}")
        for i, (name, hi) in enumerate((("obs", c.n_obs), ("prev action", c.n_actions + 1), ("prev reward", c.n_rewards))):
            col = tokens[..., i]
            if col.numel() and (col.min() < 0 or col.max() >= hi):
                raise CourseError(f"token {name} values must be in [0, {hi}), got range [{int(col.min())}, {int(col.max())}]")

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """The residual stream before block 0: token embedding + positional embedding."""
        self.check_tokens(tokens)
        tokens = tokens.long().to(self.W_U.device)
        x = self.obs_embed(tokens[..., 0]) + self.action_embed(tokens[..., 1]) + self.reward_embed(tokens[..., 2])
        x = self.hook_embed(x)
        pos = self.hook_pos_embed(self.pos_embed(tokens[..., 0]))
        return x + pos


class GridEmbedding(nn.Module):
    """Embedding of a grid cell index as row embedding + column embedding."""

    def __init__(self, size: int, d_model: int):
        super().__init__()
        self.size = size
        self.row = nn.Embedding(size, d_model)
        self.col = nn.Embedding(size, d_model)

    def forward(self, cells: Tensor) -> Tensor:
        return self.row(cells // self.size) + self.col(cells % self.size)
