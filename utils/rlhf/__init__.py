"""The RLHF pipeline in miniature (chapter 10): synthetic preferences with a hidden true
preference, a reward model trained with TRL's RewardTrainer, a policy trained against it with
TRL's RLOOTrainer, and the tools that open the reward model and compare tuned with base.

- `preferences`: the hidden true reward, the planted spurious feature (length), label noise,
  train / heldout / decorrelated splits, the shuffled-preference control, JSON-lines files.
- `train`: `train_reward_model`, `RewardModel.score`, `train_policy` (KL-penalised RLOO with
  the true reward logged at every step), accuracies.
- `analysis`: the reward model as a HookedTransformer plus a score direction; direct
  attribution to components, token occlusion, SAE-feature attribution, counterfactual edits,
  a greedy substitution search, base-to-tuned patching and the future-property probe.
"""
