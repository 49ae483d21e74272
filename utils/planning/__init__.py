"""Chapter 08: planning in a model-free recurrent agent (DRC on Sokoban)."""
