"""The decision transformer (Chen et al. 2021) as a TransformerLens HookedTransformer.

Tokens are [B, T, 3] integers, one row per timestep: (return-to-go R_t, state s_t, action
a_t). The model embeds each with its own embedding (the RTG embedding is a LINE,
`R_t * rtg_scale * w_R + b_R`, as in the paper), interleaves them as R_1, s_1, a_1, R_2, ...
(3T positions) and runs the blocks (`EmbeddedTokensTransformer`, the pattern shared with
`ADTransformer`). The action a_t is predicted at the position of s_t, which sees R_1..R_t,
s_1..s_t and a_1..a_{t-1} only (causal attention), so the action column of the last row can
hold anything at inference time.

Hook points: the usual TransformerLens names (`blocks.0.attn.hook_pattern`,
`blocks.0.attn.hook_z`, `blocks.0.hook_resid_post`, ...) over the 3T positions, plus
`hook_rtg_embed`, `hook_state_embed` and `hook_action_embed` [B, T, d_model] before
interleaving. `use_rtg=False` builds the behavioural-cloning control: the same network with
the RTG embedding multiplied by zero (the model cannot read the requested return).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError, check_fields
from utils.models.embedded import EmbeddedTokensTransformer, hooked_transformer_config

RTG, STATE, ACTION = 0, 1, 2   # the token type of position p is p % 3


@dataclass
class DTConfig:
    n_states: int = 10
    n_actions: int = 10
    context_len: int = 10     # timesteps (the model sees 3 * context_len positions)
    n_layers: int = 1
    d_model: int = 32
    n_heads: int = 2
    d_mlp: int = 64
    rtg_scale: float = 0.1    # RTG values are multiplied by this before the linear embedding
    use_rtg: bool = True      # False: behavioural cloning (RTG embedding zeroed)
    seed: int = 0

    def validate(self) -> None:
        check_fields(self, positive_int=("n_states", "n_actions", "context_len", "n_layers", "d_model",
                                         "n_heads", "d_mlp"), positive=("rtg_scale",), nonneg_int=("seed",))
        if self.d_model % self.n_heads:
            raise CourseError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")


def interleave(rtg_emb: Tensor, state_emb: Tensor, action_emb: Tensor) -> Tensor:
    """[B, T, d] x 3 -> [B, 3T, d] in the order R_1, s_1, a_1, R_2, s_2, a_2, ..."""
    if not rtg_emb.shape == state_emb.shape == action_emb.shape:
        raise CourseError(f"the three embeddings must have one shape, got {tuple(rtg_emb.shape)}, "
                          f"{tuple(state_emb.shape)}, {tuple(action_emb.shape)}")
    b, t, d = rtg_emb.shape
    return torch.stack([rtg_emb, state_emb, action_emb], dim=2).reshape(b, 3 * t, d)


class DecisionTransformer(EmbeddedTokensTransformer):
    """Logits [B, 3T, n_actions] from tokens [B, T, 3] = (rtg, state, action); the action
    prediction for step t is at position 3t + 1 (`action_logits` picks those)."""

    def __init__(self, cfg: DTConfig):
        cfg.validate()
        super().__init__(hooked_transformer_config(
            n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
            d_mlp=cfg.d_mlp, n_ctx=3 * cfg.context_len, d_vocab_out=cfg.n_actions, seed=cfg.seed))
        self.dt_cfg = cfg
        self.rtg_embed = nn.Linear(1, cfg.d_model)
        self.state_embed = nn.Embedding(cfg.n_states, cfg.d_model)
        self.action_embed = nn.Embedding(cfg.n_actions + 1, cfg.d_model)  # + NONE (unknown action)
        for emb in (self.state_embed, self.action_embed):
            nn.init.normal_(emb.weight, std=0.2)
        nn.init.normal_(self.rtg_embed.weight, std=0.2)
        nn.init.zeros_(self.rtg_embed.bias)
        self.hook_rtg_embed, self.hook_state_embed, self.hook_action_embed = HookPoint(), HookPoint(), HookPoint()
        self.setup()  # register the hook points again now that the module tree is complete

    @property
    def none_action(self) -> int:
        return self.dt_cfg.n_actions

    @property
    def rtg_direction(self) -> Tensor:
        """The line the RTG embedding moves along: d(embedding)/d(R) = rtg_scale * w_R [d_model]."""
        return self.dt_cfg.rtg_scale * self.rtg_embed.weight[:, 0].detach()

    def check_tokens(self, tokens: Tensor) -> None:
        c = self.dt_cfg
        if not isinstance(tokens, Tensor) or tokens.ndim != 3 or tokens.shape[-1] != 3:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise CourseError(f"DT tokens must have shape [batch, steps, 3] (rtg, state, action), got {shape}")
        if tokens.shape[1] > c.context_len:
            raise CourseError(f"a context of {tokens.shape[1]} steps is longer than the model's context_len "
                              f"{c.context_len}: keep the last {c.context_len} steps")
        for i, (name, hi) in ((1, ("state", c.n_states)), (2, ("action", c.n_actions + 1))):
            col = tokens[..., i]
            if col.numel() and (col.min() < 0 or col.max() >= hi):
                raise CourseError(f"token {name} values must be in [0, {hi}), got range [{int(col.min())}, {int(col.max())}]")

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """The residual stream before block 0 [B, 3T, d]: interleaved embeddings + positions."""
        self.check_tokens(tokens)
        tokens = tokens.long().to(self.W_U.device)
        rtg = tokens[..., :1].float() * self.dt_cfg.rtg_scale
        r = self.rtg_embed(rtg) * (1.0 if self.dt_cfg.use_rtg else 0.0)
        x = interleave(self.hook_rtg_embed(r), self.hook_state_embed(self.state_embed(tokens[..., 1])),
                       self.hook_action_embed(self.action_embed(tokens[..., 2])))
        x = self.hook_embed(x)
        b, p = x.shape[:2]
        pos = self.hook_pos_embed(self.pos_embed(torch.zeros(b, p, dtype=torch.long, device=x.device)))
        return x + pos

    def action_logits(self, tokens: Tensor, **kwargs) -> Tensor:
        """Action logits [B, T, n_actions], read at the state positions."""
        return self(tokens, **kwargs)[:, STATE::3]

    def fast_logits(self, tokens: Tensor) -> Tensor:
        """The same function as `forward` (logits [B, 3T, n_actions]), computed with the same
        parameters through fused torch kernels (`F.layer_norm`, `F.scaled_dot_product_attention`
        with its built-in causal mask) and none of TransformerLens's hook points: the training
        path (`utils.dt.train.train_dt`). Hooks and caches need `forward`; tests/test_dt.py checks
        that the two agree."""
        import torch.nn.functional as F

        c = self.cfg
        x = self.embed_tokens(tokens)
        b, p, d = x.shape
        for blk in self.blocks:
            a = blk.attn
            h = F.layer_norm(x, (d,), blk.ln1.w, blk.ln1.b, c.eps)
            nh, e = a.W_Q.shape[0], a.W_Q.shape[2]
            # one matmul for Q, K and V: [d, 3 * H * e] from the three [H, d, e] weights
            w = torch.cat([a.W_Q, a.W_K, a.W_V]).permute(1, 0, 2).reshape(d, 3 * nh * e)
            qkv = torch.addmm(torch.cat([a.b_Q, a.b_K, a.b_V]).reshape(-1), h.reshape(b * p, d), w)
            q, k, v = qkv.reshape(b, p, 3, nh, e).permute(2, 0, 3, 1, 4)       # 3 x [B, H, P, e]
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / c.attn_scale)
            z = z.transpose(1, 2).reshape(b * p, nh * e)
            x = x + torch.addmm(a.b_O, z, a.W_O.reshape(nh * e, d)).reshape(b, p, d)
            h = F.layer_norm(x, (d,), blk.ln2.w, blk.ln2.b, c.eps)
            x = x + F.gelu(h @ blk.mlp.W_in + blk.mlp.b_in) @ blk.mlp.W_out + blk.mlp.b_out
        x = F.layer_norm(x, (d,), self.ln_final.w, self.ln_final.b, c.eps)
        return x @ self.unembed.W_U + self.unembed.b_U

    def fast_action_logits(self, tokens: Tensor) -> Tensor:
        """`action_logits` through `fast_logits` (no hooks): what training uses."""
        return self.fast_logits(tokens)[:, STATE::3]
