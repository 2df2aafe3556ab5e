"""Triggers: what starts runs from outside (webhooks, schedules, database changes).

They sit below the client: each verifies or computes what happened and hands a run to a
callback (``Client.execute`` in practice) with an idempotency key, so that a retried
delivery, a second ticker or a restarted listener never starts a second run.
"""
