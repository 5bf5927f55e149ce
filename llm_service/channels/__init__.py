"""The channel taxonomy (global, read-only reference data) and its one repository."""
