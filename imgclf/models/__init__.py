"""One door to every architecture (factory), the structure of pruned networks, and the trained model."""
