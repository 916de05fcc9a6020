"""Saved state shared by every worker: the key-value store, run records, the ledger, the rate budget."""
