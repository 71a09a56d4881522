"""The active-learning queue: uncertain predictions kept for a person to label, then merged into the data."""
