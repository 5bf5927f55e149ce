"""The investigation agent's tools: typed, read-only, tenant-scoped, built on the analytics."""
