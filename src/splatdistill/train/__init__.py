"""Training: losses, schedules, teacher variants, checkpoints and the trainer."""
