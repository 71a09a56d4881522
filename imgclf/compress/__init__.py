"""Making a trained model smaller by training it again: channel pruning and distillation, with their figures."""
