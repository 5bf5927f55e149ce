"""Explanations of dashboard numbers: exact-scope cache, single flight, model or deterministic."""
