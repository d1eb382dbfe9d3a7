"""Plain PyTorch networks (deterministic, trainable on their own as baselines)."""
