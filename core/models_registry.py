"""Every package's models, imported once so that the metadata is complete (Alembic, tests)."""

from core import audit, idempotency, models, outbox  # noqa: F401
from fees import models as fees_models  # noqa: F401
from notices import models as notices_models  # noqa: F401
from payments import models as payments_models  # noqa: F401
from receipts import models as receipts_models  # noqa: F401
from reconciliation import models as reconciliation_models  # noqa: F401
from webhooks import models as webhooks_models  # noqa: F401

metadata = models.Base.metadata
