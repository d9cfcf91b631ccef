"""Metrics (overall + subset) and report tables."""
