"""The reconciliation tests reuse the registered test bank of the webhook tests."""

from tests.webhooks.conftest import bank  # noqa: F401
