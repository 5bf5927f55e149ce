"""Workers: claim queued runs from PostgreSQL and take each to a terminal state."""
