"""The job kit: one queue for every job kind (claim, leases, heartbeats, hand-back, takeover,
idempotent creation, ledger links); investigations and budget optimisations are two kinds."""
