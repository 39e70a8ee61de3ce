"""Metric history in tiers: raw samples for a short window, and per-minute and per-hour rollups kept longer,
folded in by ingest as samples arrive; the metrics API reads the tier that fits a chart's range and step."""
