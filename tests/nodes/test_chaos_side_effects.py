"""Exactly-once side effects under ``kill -9``: 100 runs each send an e-mail, upsert a row,
send a WhatsApp message and take a payment, while worker process groups are SIGKILLed.

Afterwards, on the real services (aiosmtpd, PostgreSQL, the loopback WhatsApp API and the
Stripe-style provider):

* every run completed;
* one row per run (an upsert on the run's key) and one charge per run (the provider
  replays the saved result of the node's idempotency key) -- exactly, whatever the kills;
* one e-mail per run *by Message-ID*: every message of a run carries the same id;
* one WhatsApp message per run, except where a worker died while that node was in
  flight (the Cloud API has no idempotency key: a message the provider accepted just
  before the worker died is sent again by the retry). Such a duplicate is allowed only
  for a node whose lease the store saw expire (``stall_count``), at most one per stall,
  and it carries the same ``biz_opaque_callback_data`` (traceable to the run and node).
  The figures are printed (``pytest -s``).

Workers are ``autoflow worker autoflow.nodes --kind process`` commands on a private
redis-server: the workflow is JSON only, so they import no user code.
"""

from __future__ import annotations

import os
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import autoflow as af
from tests.nodes.servers import FakePayments, FakeWhatsApp, HTTPServer, SMTPRecorder
from tests.test_chaos import _SCRUBBED_ENV, Fleet

pytestmark = pytest.mark.slow

RUNS = 100
GROUPS, PROCS = 3, 2
KILL_EVERY = (0.3, 0.6)  # the first kills land before the runs can drain
CHAOS_SECONDS = 20.0
DEADLINE = 75.0
MIN_KILLS = 6
ROOT = Path(__file__).resolve().parents[2]


def _definition(smtp_port: int, wa_url: str, pay_url: str) -> dict[str, Any]:
    inputs = {"key": {"type": "string"}, "n": {"type": "integer"}}
    return {
        "name": "side_effects",
        "inputs": inputs,
        "nodes": [
            {"id": "mail", "type": "send_email", "config": {
                "to": {"$template": "{{ inputs.key }}@chaos.test"}, "sender": "shop@chaos.test",
                "subject": {"$template": "run {{ inputs.key }}"}, "text": "hello",
                "host": "127.0.0.1", "port": smtp_port, "security": "none"}},
            {"id": "row", "type": "database_save", "config": {
                "table": "chaos_rows", "connection": "chaos_db", "key": "run_key",
                "rows": {"run_key": {"$input": "key"}, "n": {"$input": "n"},
                         "message_id": {"$expr": "nodes.mail.message_id"}}}},
            {"id": "wa", "type": "whatsapp_send", "config": {
                "to": {"$template": "1555{{ inputs.n }}000"}, "phone_number_id": "1234567890",
                "credential": "chaos_wa", "api_url": wa_url,
                "text": {"$template": "run {{ inputs.key }}: {{ nodes.row.rows }} row"},
                "timeout": 5}, "options": {"backoff": {"base": 0.2, "factor": 2.0, "max": 1.0}}},
            {"id": "pay", "type": "payment_process", "config": {
                "amount": {"$expr": "sum([`100`, nodes.row.rows, inputs.n])"}, "currency": "usd",
                "credential": "chaos_pay", "api_url": pay_url, "payment_method": "pm_card_visa",
                "metadata": {"key": {"$input": "key"}, "wamid": {"$expr": "nodes.wa.message_id"}}, "timeout": 5},
             "options": {"retries": 8, "backoff": {"base": 0.2, "factor": 2.0, "max": 1.0}}},
        ],
        "edges": [],
        "output": "pay",
    }  # fmt: skip


def test_side_effects_are_exactly_once_under_kill_9(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS chaos_rows"))
        conn.execute(sa.text("CREATE TABLE chaos_rows (run_key TEXT PRIMARY KEY, n INTEGER, message_id TEXT)"))
    smtp = SMTPRecorder()
    wa_api, pay_api = FakeWhatsApp(throttle=0), FakePayments()
    wa, pay = HTTPServer(delay=0.15), HTTPServer(delay=0.15)  # requests in flight long enough to be cut
    wa.fallback, pay.fallback = wa_api, pay_api
    namespace = f"fx{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV and not k.startswith("AUTOFLOW_CREDENTIAL")}
    env.update(
        AUTOFLOW_REDIS_URL=redis_url,
        AUTOFLOW_NAMESPACE=namespace,
        AUTOFLOW_LEASE_SECONDS="2",
        AUTOFLOW_REQUEUE_SECONDS="2",
        AUTOFLOW_MAX_STALLS="20",
        WORKFLOW_CONCURRENCY="100",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
        AUTOFLOW_CREDENTIAL_CHAOS_DB=pg_url,
        AUTOFLOW_CREDENTIAL_CHAOS_WA=FakeWhatsApp.TOKEN,
        AUTOFLOW_CREDENTIAL_CHAOS_PAY=FakePayments.KEY,
    )
    settings = af.Settings(
        namespace=namespace, lease_seconds=2, requeue_seconds=2, max_stalls=20, home=tmp_path / "home"
    )
    client = af.Client(redis_url, settings=settings, workers=0)
    fleet = Fleet(env, tmp_path, PROCS, module="autoflow.nodes")
    rng = random.Random(9)
    try:
        wf = af.Workflow.from_dict(_definition(smtp.port, wa.url(""), pay.url("")))
        for _ in range(GROUPS):
            fleet.start()
        runs = {client.execute(wf, key=f"k{i}", n=i).id: i for i in range(RUNS)}
        started = time.monotonic()
        next_kill = started + rng.uniform(*KILL_EVERY)
        while True:
            unfinished = [r for r in runs if not client.status(r).finished]
            if not unfinished:
                break
            now = time.monotonic()
            assert now - started < DEADLINE, f"{len(unfinished)} run(s) unfinished after {DEADLINE}s\n{fleet.logs()}"
            if now >= next_kill and now - started < CHAOS_SECONDS:
                fleet.kill(rng.randrange(len(fleet.alive)))
                next_kill = now + rng.uniform(*KILL_EVERY)
            fleet.check_health()
            time.sleep(0.05)
        elapsed = time.monotonic() - started

        infos = {run_id: client.status(run_id) for run_id in runs}
        failed = {r: str(i.error) for r, i in infos.items() if i.status is not af.RunStatus.COMPLETED}
        assert not failed, failed
        with engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT run_key, n FROM chaos_rows")).all())
        assert rows == {f"k{i}": i for i in range(RUNS)}
        charges = Counter(c["metadata"]["autoflow_run"] for c in pay_api.charges)
        assert charges == Counter(dict.fromkeys(runs, 1)), "a run was charged twice or not at all"
        for run_id, info in infos.items():
            assert info.output["amount"] == 101 + runs[run_id]
        mails = list(smtp.messages)
        by_run: dict[str, set[str]] = {}
        for m in mails:
            by_run.setdefault(m["rcpts"][0].split("@")[0], set()).add(m["message_id"])
        assert by_run == {f"k{i}": {f"<{r}.mail@autoflow.local>"} for r, i in runs.items()}
        sent = Counter(m["biz_opaque_callback_data"].split(":")[0] for m in wa_api.messages)
        stalls = {r: infos[r].nodes["wa"].stall_count for r in runs}
        for run_id in runs:
            assert sent[run_id] >= 1, f"run {run_id} sent no WhatsApp message"
            assert sent[run_id] <= 1 + stalls[run_id], (run_id, sent[run_id], stalls[run_id])
        wa_dupes = sum(sent.values()) - RUNS
        mail_dupes = len(mails) - RUNS
        assert fleet.kills >= MIN_KILLS
        node_stalls = sum(n.stall_count for i in infos.values() for n in i.nodes.values())
        print(
            f"\nside effects under kill -9: {RUNS} runs in {elapsed:.1f}s, {fleet.kills} kills, {node_stalls} stalled "
            f"nodes; rows {len(rows)}, charges {len(pay_api.charges)} (replays "
            f"{sum(1 for i in infos.values() if i.nodes['pay'].output and i.nodes['pay'].output.get('replayed'))}), "
            f"e-mails {len(mails)} ({mail_dupes} resent with the same Message-ID), WhatsApp {sum(sent.values())} "
            f"({wa_dupes} duplicate(s), each after a stall)",
            file=sys.stderr,
        )
    finally:
        fleet.stop_all()
        client.close()
        smtp.close()
        wa.close()
        pay.close()
        engine.dispose()
