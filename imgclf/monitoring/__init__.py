"""What the service saw: per-image statistics, the prediction row, and the prediction log that stores
rows without ever blocking a request (read back as typed windows for drift checks)."""
