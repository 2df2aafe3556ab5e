"""The PostgreSQL outbox: a row trigger per watched table, ``pg_notify`` as a wake-up.

Installed on activation (in one transaction, under an advisory lock)::

    autoflow_outbox (id bigserial, trigger_id, table_name, op, old_row jsonb,
                     new_row jsonb, truncated, txid, at)      -- in the table's schema
    FUNCTION autoflow_capture_<trigger>()  -- writes the row, then pg_notify('autoflow_<trigger>', id)
    TRIGGER  autoflow_<trigger> AFTER INSERT OR UPDATE OR DELETE ON <table> FOR EACH ROW

A row larger than ``max_row_bytes`` (as JSON text) is replaced by its primary key and the
event says ``truncated``. The notification carries the trigger id only: identical payloads
of one transaction fold into one, so 10,000 rows written at once wake the listener once,
and no payload nears PostgreSQL's 8,000-byte limit. Needs ``pip install 'autoflow[postgres]'``
(psycopg 3).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from autoflow import codec
from autoflow.errors import BackendError, InputError
from autoflow.models import DbTriggerInfo
from autoflow.triggers.outbox import Event

try:  # optional: pip install 'autoflow[postgres]'
    import psycopg
    from psycopg import sql

    HAVE_PSYCOPG = True
except ImportError:  # pragma: no cover - exercised only without the extra
    HAVE_PSYCOPG = False

__all__ = ["PostgresSource", "names"]

INSTALL_HINT = "PostgreSQL triggers need psycopg 3: pip install 'autoflow[postgres]'"


def names(trigger_id: str) -> dict[str, str]:
    """Database object names of a trigger (identifiers of at most 63 bytes)."""
    slug = re.sub(r"[^a-z0-9_]", "_", trigger_id.lower())[:36]
    tag = hashlib.sha1(trigger_id.encode()).hexdigest()[:8]
    return {
        "function": f"autoflow_capture_{slug}_{tag}",
        "trigger": f"autoflow_{slug}_{tag}",
        "channel": f"autoflow_{slug}_{tag}",
    }


class PostgresSource:
    """The outbox of one trigger in a PostgreSQL database (see the module docstring).

    Example::

        source = PostgresSource(info, "postgresql://app@127.0.0.1/shop")
        source.install(); source.fetch(100); source.close()
    """

    def __init__(self, info: DbTriggerInfo, url: str, *, listen: bool = False) -> None:
        if not HAVE_PSYCOPG:
            raise InputError(INSTALL_HINT)
        self.info = info
        self.shown = codec.redact_text(url)
        self.names = names(info.id)
        try:
            self.conn = psycopg.connect(
                url, autocommit=True, connect_timeout=5, application_name=f"autoflow-trigger:{info.id}"[:63]
            )
        except psycopg.Error as exc:
            raise BackendError(self.shown, codec.redact_text(f"{type(exc).__name__}: {exc}")) from None
        self.outbox = sql.Identifier(info.schema_name, "autoflow_outbox")
        if listen:
            self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.names["channel"])))

    def _fail(self, exc: Exception, doing: str) -> BackendError:
        hint = ""
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            hint = " (the user needs CREATE on the schema and TRIGGER on the table)"
        return BackendError(self.shown, codec.redact_text(f"{doing}: {type(exc).__name__}: {exc}{hint}"))

    def install(self) -> None:
        info, n = self.info, self.names
        table = sql.Identifier(info.schema_name, info.table)
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('autoflow_outbox'))")
                found = self.conn.execute("SELECT to_regclass(%s)", (table.as_string(self.conn),)).fetchone()
                if found is None or found[0] is None:
                    raise InputError(f"table {info.schema_name}.{info.table} does not exist in {self.shown}")
                self.conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, trigger_id text NOT NULL,"
                        " table_name text NOT NULL, op text NOT NULL, old_row jsonb, new_row jsonb,"
                        " truncated boolean NOT NULL DEFAULT false, txid bigint NOT NULL DEFAULT txid_current(),"
                        " at timestamptz NOT NULL DEFAULT clock_timestamp())"
                    ).format(self.outbox)
                )
                self.conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (trigger_id, id)").format(
                        sql.Identifier("autoflow_outbox_trigger_id"), self.outbox
                    )
                )
                self.conn.execute(self._function(table))
                self.conn.execute(
                    sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(n["trigger"]), table)
                )
                self.conn.execute(
                    sql.SQL("CREATE TRIGGER {} AFTER {} ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
                        sql.Identifier(n["trigger"]),
                        sql.SQL(" OR ").join(sql.SQL(op) for op in info.operations),
                        table,
                        sql.Identifier(info.schema_name, n["function"]),
                    )
                )
        except psycopg.Error as exc:
            raise self._fail(exc, f"installing trigger {info.id!r} on {info.schema_name}.{info.table}") from None

    def _function(self, table: Any) -> Any:
        info, n = self.info, self.names
        keys = [
            row[0]
            for row in self.conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attnum",
                (table.as_string(self.conn),),
            ).fetchall()
        ]

        def key_of(row: str) -> Any:  # the primary key of OLD/NEW as a JSON object, or NULL
            if not keys:
                return sql.SQL("NULL")
            pairs = sql.SQL(", ").join(
                sql.SQL("{}, {}.{}").format(sql.Literal(k), sql.SQL(row), sql.Identifier(k)) for k in keys
            )
            return sql.SQL("jsonb_build_object({})").format(pairs)

        return sql.SQL(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $autoflow$\n"
            "DECLARE o jsonb; n jsonb; cut boolean := false;\n"
            "BEGIN\n"
            "  IF TG_OP <> 'INSERT' THEN o := to_jsonb(OLD); END IF;\n"
            "  IF TG_OP <> 'DELETE' THEN n := to_jsonb(NEW); END IF;\n"
            "  IF octet_length(coalesce(o::text, '')) > {limit} THEN o := {old_key}; cut := true; END IF;\n"
            "  IF octet_length(coalesce(n::text, '')) > {limit} THEN n := {new_key}; cut := true; END IF;\n"
            "  INSERT INTO {outbox} (trigger_id, table_name, op, old_row, new_row, truncated)\n"
            "    VALUES ({trigger_id}, TG_TABLE_NAME, TG_OP, o, n, cut);\n"
            "  PERFORM pg_notify({channel}, {trigger_id});\n"
            "  RETURN NULL;\n"
            "END $autoflow$"
        ).format(
            function=sql.Identifier(info.schema_name, n["function"]),
            limit=sql.Literal(info.max_row_bytes),
            old_key=key_of("OLD"),
            new_key=key_of("NEW"),
            outbox=self.outbox,
            trigger_id=sql.Literal(info.id),
            channel=sql.Literal(n["channel"]),
        )

    def uninstall(self) -> None:
        info, n = self.info, self.names
        table = sql.Identifier(info.schema_name, info.table)
        try:
            try:
                if self.conn.execute("SELECT to_regclass(%s)", (table.as_string(self.conn),)).fetchone() != (None,):
                    self.conn.execute(
                        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(n["trigger"]), table)
                    )
            finally:  # the function goes even if the trigger could not (CASCADE takes it along)
                self.conn.execute(
                    sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(
                        sql.Identifier(info.schema_name, n["function"])
                    )
                )
                if self.conn.execute("SELECT to_regclass(%s)", (self.outbox.as_string(self.conn),)).fetchone() != (
                    None,
                ):
                    self.conn.execute(sql.SQL("DELETE FROM {} WHERE trigger_id = %s").format(self.outbox), (info.id,))
        except psycopg.Error as exc:
            raise self._fail(exc, f"removing trigger {info.id!r}") from None

    def fetch(self, limit: int) -> list[Event]:
        rows = self.conn.execute(
            sql.SQL(
                "SELECT id, table_name, op, old_row, new_row, truncated, extract(epoch FROM at)"
                " FROM {} WHERE trigger_id = %s ORDER BY id LIMIT %s"
            ).format(self.outbox),
            (self.info.id, limit),
        ).fetchall()
        return [Event(int(r[0]), r[1], r[2], r[3], r[4], bool(r[5]), float(r[6])) for r in rows]

    def delete(self, ids: Sequence[int]) -> None:
        self.conn.execute(
            sql.SQL("DELETE FROM {} WHERE trigger_id = %s AND id = ANY(%s)").format(self.outbox),
            (self.info.id, list(ids)),
        )

    def wait(self, timeout: float) -> bool:
        return any(True for _ in self.conn.notifies(timeout=timeout, stop_after=1))

    def close(self) -> None:
        self.conn.close()
