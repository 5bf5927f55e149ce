"""Investigations: bounded LLM agent runs over a tenant's attribution data, queued in PostgreSQL."""
