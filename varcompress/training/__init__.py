"""Training utilities shared by testbed training and distillation."""
