"""Simulated units that speak the real wire protocol: demos, dashboard tests and load."""
