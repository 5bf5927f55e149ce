"""Database access: the embedded server, connection URLs, pools, tenant transactions, migrations."""
