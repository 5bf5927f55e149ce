"""Costs for finance: a tenant's monthly report (JSON or CSV) and the ledger reconciliation."""
