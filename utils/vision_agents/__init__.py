"""Chapter 11 (agents that see): MinAtar and Acrobot agents, attribution checked by interventions,
probes of game variables and spatial patching. See `agents`, `games` and `interp`."""
