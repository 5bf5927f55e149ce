"""Tenants: creation, API keys, authentication, monthly caps."""
