"""The archive's tables, one definition for every store; each names its own column types.

>>> "BIGSERIAL PRIMARY KEY" in tables("a", serial="BIGSERIAL PRIMARY KEY", timestamp="TIMESTAMPTZ", blob="BYTEA")
True
"""

from __future__ import annotations

__all__ = ["tables"]


def tables(table: str, *, serial: str, timestamp: str, blob: str, updated_default: str = "") -> str:
    """``CREATE ... IF NOT EXISTS`` for the events table ``table``, its indexes and ``<table>_state``.

    ``serial`` is the auto-incrementing key's type, ``timestamp`` the times' type (a number of
    microseconds where the database has no time type), ``blob`` the bytes' type.
    """
    t = table
    updated = f"{timestamp} NOT NULL {updated_default}".rstrip()
    return f"""
        CREATE TABLE IF NOT EXISTS {t} (
            seq {serial},
            topic TEXT NOT NULL,
            source TEXT NOT NULL,
            event_id TEXT NOT NULL,
            redrive INTEGER NOT NULL DEFAULT 0,
            type TEXT NOT NULL,
            subject TEXT,
            time {timestamp} NOT NULL,
            recorded {timestamp} NOT NULL,
            kind TEXT NOT NULL,
            app TEXT NOT NULL,
            grp TEXT,
            errortype TEXT,
            event {blob}
        );
        CREATE UNIQUE INDEX IF NOT EXISTS {t}_identity ON {t} (topic, source, event_id, redrive);
        CREATE INDEX IF NOT EXISTS {t}_topic_time ON {t} (topic, time, seq);
        CREATE INDEX IF NOT EXISTS {t}_type_time ON {t} (type, time);
        CREATE INDEX IF NOT EXISTS {t}_source_time ON {t} (source, time);
        CREATE INDEX IF NOT EXISTS {t}_recorded ON {t} (recorded);
        CREATE TABLE IF NOT EXISTS {t}_state (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            updated {updated},
            PRIMARY KEY (kind, name)
        );
    """
