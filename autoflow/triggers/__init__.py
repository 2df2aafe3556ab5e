"""Triggers: what starts runs from outside: schedules that fire once per slot, database-change
listeners, Huey periodic tasks and webhook verification (``triggers.webhooks``).

Below the client in the layers: triggers start runs through a :class:`Starter` (what
``af.Client`` offers) with an idempotency key, so the client imports them and never the
reverse, and a retried delivery, a second ticker or a restarted listener never starts a
second run.

Example::

    import autoflow as af

    client = af.Client()
    client.schedules.create("report", cron="0 9 * * MON", timezone="America/Sao_Paulo")
    client.db_triggers.activate("on_order", kind="postgres", table="orders", url_env="SHOP_DB_URL")
    af.triggers.preview(cron="30 1 * * *", timezone="America/New_York", n=3)
"""

from autoflow.triggers.base import StartedRun, Starter
from autoflow.triggers.dbtriggers import DbTriggers
from autoflow.triggers.outbox import Event, Listener, Listeners
from autoflow.triggers.periodic import huey_periodic
from autoflow.triggers.schedules import MAX_BACKFILL, Schedules, preview
from autoflow.triggers.service import TriggerService
from autoflow.triggers.spec import Spec
from autoflow.triggers.ticker import GRACE, Ticker

__all__ = [
    "GRACE",
    "MAX_BACKFILL",
    "DbTriggers",
    "Event",
    "Listener",
    "Listeners",
    "Schedules",
    "Spec",
    "StartedRun",
    "Starter",
    "Ticker",
    "TriggerService",
    "huey_periodic",
    "preview",
]
