"""Drift of served traffic against the served version's reference profile (Evidently 0.7)."""
