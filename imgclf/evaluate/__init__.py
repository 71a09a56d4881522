"""Evaluation on the held-out test split: metrics, statistics, subgroups, the gate, figures, report, card."""
