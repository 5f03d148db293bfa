"""Measurement: accuracy scoring, FLOPs, memory footprint, latency, export."""
