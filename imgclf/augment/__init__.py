"""The augmentation policy, its batched form for training, and its preview."""
