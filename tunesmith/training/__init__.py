"""Training: model set-up, the loop, loss, checkpoints and progress events."""
