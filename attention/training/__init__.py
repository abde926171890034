"""Training: the model a run starts from (built under its seed, weights moved in by role, blocks gated) and the train job."""
