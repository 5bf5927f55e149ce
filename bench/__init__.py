"""Benchmarks: plain scripts that print figures, never pass/fail."""
