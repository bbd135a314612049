"""Inbound bank callbacks and outbound notifications (issue #4)."""
