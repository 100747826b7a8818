"""Building blocks the jobs compose: losses, image metrics, importance scores, pruning policies,
structural losses, the training background, evaluation and the one optimisation loop (``optim.fit``)."""
