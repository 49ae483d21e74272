"""The course's hookable networks (TransformerLens `HookedRootModule` / `HookedTransformer`).

- `mlp_policy.HookedMLPPolicy`: actor-critic MLP (hooks `hook_obs`, `layers.{i}.hook_pre`,
  `layers.{i}.hook_post`, `hook_logits`, `hook_value`); the policy of PPO and A2C and the
  Q-network of DQN.
- `ad_transformer.ADTransformer`: a `HookedTransformer` reading (observation, previous
  action, previous reward) tokens through custom embeddings: the pattern for any
  transformer over RL trajectories (Algorithm Distillation, decision transformers).
- `decision_transformer.DecisionTransformer`: a decision transformer over (return-to-go,
  state, action) tokens; both transformers share `embedded.EmbeddedTokensTransformer`
  (custom embeddings, then the blocks with `start_at_layer=0`).
- `actor_critic.SeparateActorCritic`: an actor and a critic as two separate `HookedMLPPolicy`
  networks (their own hook names), trained by `train_ppo` unchanged (chapter 09).
- `conv_policy.HookedConvPolicy`: a convolutional actor-critic on flat image observations
  (hooks `hook_obs`, `convs.{i}.hook_pre/post`, `layers.{j}.hook_pre/post`, `hook_logits`,
  `hook_value`), trained by `train_ppo` / `train_dqn` unchanged (chapter 11: MinAtar, Pong).
- `drc.DRC`: the Deep Repeated ConvLSTM agent of Guez et al. (2019), DRC(D, N), hooks
  `hook_h.{layer}.{tick}` / `hook_c.{layer}.{tick}`, and `drc.ConvBaseline`, its feed-forward
  control with a matched parameter count (chapter 08).

A new chapter adds its network as one module here.
"""
from utils.models.ad_transformer import ADConfig, ADTransformer
from utils.models.decision_transformer import DecisionTransformer, DTConfig
from utils.models.embedded import EmbeddedTokensTransformer
from utils.models.mlp_policy import HookedMLPPolicy

__all__ = ["ADConfig", "ADTransformer", "DTConfig", "DecisionTransformer", "EmbeddedTokensTransformer",
           "HookedMLPPolicy"]
