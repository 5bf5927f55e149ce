"""The worker's own named statements (the queue's are in `llm_service.jobs.repository`)."""

from __future__ import annotations

# What the server allows: max_connections less the slots kept for superusers (and, from
# PostgreSQL 16, for roles with pg_use_reserved_connections; NULL before 16), and the sessions
# connected to a database now. A role that is not a superuser sees other roles' rows with
# backend_type NULL but datid set (background processes have none; the few autovacuum workers
# that do are counted too: the error is on the safe side).
CONNECTION_BUDGET = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
       (SELECT count(*) FROM pg_stat_activity WHERE datid IS NOT NULL)::int AS in_use
"""
