"""Statement import, nightly reconciliation, exceptions and reports (issue #5)."""
