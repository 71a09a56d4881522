"""Training: the loop and its state, epoch hooks, optimiser and schedule, data-parallel runs, the LR finder."""
