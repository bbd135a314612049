"""Gap-free receipts, receipt PDF, public verification and the certificate gate (issue #3)."""
