"""Hugging Face's `transformers.DecisionTransformerModel` on the chapter's tokens, for comparison.

The library a user would otherwise pick: GPT-2 blocks, states and actions as float vectors,
returns as a [B, T, 1] float and timesteps embedded. `hf_model(ref)` builds it at the size of a
course `DecisionTransformer` (layers, heads, d_model, d_mlp, context), `hf_inputs` turns the
course's (rtg, state, action) tokens into its inputs (one-hot states and actions, the RTG times
the course model's `rtg_scale`), `train_hf` trains it with the course's optimiser, schedule,
batch sampling and loss (`utils.dt.train`), and `hf_act` is its greedy action at the last step
(for `utils.dt.minigrid.minigrid_curve(..., act_fn=...)`).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError
from utils.dt.train import DTTrainConfig, dt_loss


def hf_model(ref, seed: int):
    """A DecisionTransformerModel of the same size as the course model `ref` (no dropout,
    no tanh on the actions: they are logits here)."""
    from transformers import DecisionTransformerConfig, DecisionTransformerModel
    c = ref.dt_cfg
    torch.manual_seed(seed)
    cfg = DecisionTransformerConfig(state_dim=c.n_states, act_dim=c.n_actions, hidden_size=c.d_model,
                                    n_layer=c.n_layers, n_head=c.n_heads, n_inner=c.d_mlp,
                                    max_ep_len=c.context_len, n_positions=3 * c.context_len,
                                    action_tanh=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DecisionTransformerModel(cfg)
    model.rtg_scale, model.n_states, model.n_actions = c.rtg_scale, c.n_states, c.n_actions
    return model


def hf_inputs(model, tokens: Tensor) -> dict[str, Tensor]:
    """The model's keyword inputs for course tokens [B, T, 3] (the NONE action becomes zeros)."""
    if tokens.ndim != 3 or tokens.shape[-1] != 3:
        raise CourseError(f"DT tokens must have shape [batch, steps, 3], got {tuple(tokens.shape)}")
    b, t, _ = tokens.shape
    states = F.one_hot(tokens[..., 1].long(), model.n_states).float()
    act = tokens[..., 2].long()
    actions = F.one_hot(act.clamp_max(model.n_actions - 1), model.n_actions).float() * (act < model.n_actions)[..., None]
    return dict(states=states, actions=actions, returns_to_go=tokens[..., :1].float() * model.rtg_scale,
                timesteps=torch.arange(t).expand(b, t), attention_mask=torch.ones(b, t, dtype=torch.long))


def hf_logits(model, tokens: Tensor) -> Tensor:
    """Action logits [B, T, A] (predicted from each state token, as in the course model)."""
    return model(**hf_inputs(model, tokens)).action_preds


def train_hf(model, tokens: Tensor, mask: Tensor, cfg: DTTrainConfig, desc: str = "training HF DT") -> list[float]:
    """`utils.dt.train.train_dt`'s loop (AdamW, warm-up then linear decay, random minibatches of
    whole trajectories, the same loss) for the HF model; returns the loss per step."""
    cfg.validate()
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / (cfg.steps + 1)))
    model.train()
    losses = []
    for _ in tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=2):
        idx = torch.randint(0, len(tokens), (cfg.batch_size,), generator=g)
        loss = dt_loss(hf_logits(model, tokens[idx]), tokens[idx][..., 2], mask[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def hf_act(model):
    """tokens [n, t, 3] -> greedy actions [n] at the last step."""
    @torch.no_grad()
    def act(tokens: Tensor) -> Tensor:
        return hf_logits(model, tokens)[:, -1].argmax(-1)
    return act
