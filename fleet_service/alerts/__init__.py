"""Alerts: rules evaluated against the units' latest state, one open alert per rule and unit, silences."""
