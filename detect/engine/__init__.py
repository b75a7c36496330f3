"""Training loop, inference over datasets, checkpoints, EMA and logging."""
