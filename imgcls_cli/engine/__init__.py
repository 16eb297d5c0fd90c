"""Training engine: trainer, evaluator, checkpoints, optimisers and schedules, EMA."""
