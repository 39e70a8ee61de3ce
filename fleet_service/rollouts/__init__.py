"""Rollouts: one command to many units, batch by batch, stopped when too many fail."""
