"""Steering a frozen language model with RL over SAE features (chapter 04).

- hook: `steer_resid` (c * W_dec[f], decoder direction only), weight fingerprints.
- policy: `masked_categorical` (AFM-active), `ppo_ratio`, the feature policy and critic MLPs.
- crl: Control RL: tasks, steered generation, PPO training, evaluation, the fine-tuning baseline.
- autosteer: AutoSteer on tic-tac-toe: board predicates, automatic feature labels, a
  Gaussian-policy PPO over feature strengths, evaluation against minimax.
- analysis: reading and testing a steering policy (features at the steering site, top contexts,
  steered generation, attribution, norm-matched random control, the constant-strength control,
  board dependence): the references of the chapter's method exercises.

Intervals and tests come from `utils.stats`.
"""
