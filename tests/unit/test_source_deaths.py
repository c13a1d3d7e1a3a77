"""Sources that die or stall under a check, at the unit level (no server, no kernel):

- a PostgreSQL statement cancelled at ``lock_timeout`` / ``statement_timeout`` (a migration's
  ACCESS EXCLUSIVE lock on a table the database section reads) is a ``source.unreachable``
  naming the setting, never a ``check.failed`` traceback — psycopg errors from a stand-in
  connection object, the real SQL sent through :class:`perfbook.sources.postgres.Session`;
- a PostgreSQL log truncated in place while it is read (logrotate's ``copytruncate``), a
  ``.gz`` log that ends early and a read error are ``source.unreachable``, never a log taken
  for clean from the part read before — on the recorded demo log (tests/fixtures/postgres).
"""
from __future__ import annotations

import gzip
import io
import os
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from perfbook import notebook as pb
from perfbook.sources import SourceError, SourceUnreachable, postgres as P, querylog as S

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "postgres"
TARGET = "postgresql://db.internal:5432/shop"


# --------------------------------------------------------------------------- PostgreSQL timeouts


class _Cursor:
    def __init__(self, value):
        self.description = None
        self._value = value

    def fetchone(self):
        return (self._value,)

    def fetchall(self):
        return []


class Conn:
    """A psycopg connection as far as Session uses it: ``execute`` raises ``error`` for
    statements containing ``blocked_on`` (the server cancelled them) and answers an EXPLAIN
    with a one-node plan otherwise."""

    closed = broken = False

    def __init__(self, error: Exception, blocked_on: str = ""):
        self.error, self.blocked_on, self.sent = error, blocked_on, []

    def execute(self, sql, params=None):
        self.sent.append(sql)
        if self.blocked_on in sql:
            raise self.error
        return _Cursor([{"Plan": {"Node Type": "Seq Scan", "Total Cost": 10.0}}])


def session(error: Exception, blocked_on: str = "") -> P.Session:
    return P.Session(Conn(error, blocked_on), TARGET, statement_timeout=2.0, lock_timeout=1.0)


LOCK_TIMEOUT = psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
STATEMENT_TIMEOUT = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
USER_CANCEL = psycopg.errors.QueryCanceled("canceling statement due to user request")


def test_a_lock_timeout_is_source_unreachable_naming_the_setting():
    with pytest.raises(P.StatementTimeout) as e:
        P.table_stats(session(LOCK_TIMEOUT))
    assert isinstance(e.value, SourceUnreachable) and e.value.source == "postgres" and e.value.target == TARGET
    assert "lock_timeout of 1 s reached (settings.database.lock_timeout)" in e.value.reason
    assert "canceling statement due to lock timeout" in e.value.reason


def test_a_statement_timeout_is_source_unreachable_naming_the_setting():
    for fn in (P.activity, P.index_stats, P.server_info):
        with pytest.raises(P.StatementTimeout) as e:
            fn(session(STATEMENT_TIMEOUT))
        assert "statement_timeout of 2 s reached (settings.database.statement_timeout)" in e.value.reason


def test_a_cancelled_statement_is_an_answer_with_an_error():
    with pytest.raises(SourceError) as e:
        P.activity(session(USER_CANCEL))
    assert not isinstance(e.value, SourceUnreachable)
    assert "the server cancelled the statement (canceling statement due to user request)" in e.value.reason


def test_session_query_keeps_psycopg_errors():
    # the raw layer (used by the safety tests and the per-statement loops) is unchanged
    with pytest.raises(psycopg.errors.LockNotAvailable):
        session(LOCK_TIMEOUT).query("SELECT 1")


def test_one_blocked_explain_does_not_stop_the_others():
    import pandas as pd

    db = session(LOCK_TIMEOUT, blocked_on="FROM products")
    candidates = pd.DataFrame({"queryid": [1, 2], "query": ["SELECT * FROM products WHERE category_id = 3",
                                                            "SELECT * FROM orders WHERE id = 4"]})
    out = P.explain_all(db, candidates).set_index("queryid")
    assert out.loc[1, "plan"] is None and out.loc[1, "error"].startswith("timed out: lock_timeout of 1 s")
    assert pd.isna(out.loc[2, "error"]) and out.loc[2, "plan"]["Node Type"] == "Seq Scan"


def test_a_check_that_hits_the_lock_timeout_says_so_instead_of_failing(capsys):
    ctx = pb.Context("database", None, "p.yaml", datetime.now(timezone.utc), datetime.now(timezone.utc), None)
    with pb.check(ctx, "missing indexes (table scans + EXPLAIN)"):
        P.table_stats(session(LOCK_TIMEOUT))
    [f] = ctx.findings
    assert (f.code, f.severity, f.subject) == ("source.unreachable", "error", "postgres")
    assert f.evidence["target"] == TARGET and "lock_timeout of 1 s" in f.evidence["reason"]
    assert "traceback" not in capsys.readouterr().out.lower()


# --------------------------------------------------------------------------- query logs dying mid-read


def big_log(tmp_path: Path, copies: int = 2) -> Path:
    """The recorded demo log (650 kB), repeated: the reader takes it in 8 kB reads."""
    path = tmp_path / "postgresql.log"
    path.write_bytes((FIX / "healthy.postgresql.log").read_bytes() * copies)
    return path


def test_a_log_truncated_while_read_is_unreachable_not_clean(tmp_path):
    path = big_log(tmp_path)
    size = path.stat().st_size
    reader = S.read([path])
    first = [next(reader) for _ in range(50)]  # the reader is in the file's first few kB
    assert first[0].text
    os.truncate(path, 0)  # logrotate copytruncate
    with pytest.raises(SourceUnreachable) as e:
        for _ in reader:
            pass
    assert e.value.source == "logs" and e.value.target == str(path)
    assert f"the file was truncated while being read (from {size:,} to 0 bytes" in e.value.reason


def test_a_log_rotated_away_while_read_is_read_to_its_end(tmp_path):
    path = big_log(tmp_path)
    whole = sum(1 for _ in S.read([path]))
    reader = S.read([path])
    got = [next(reader) for _ in range(50)]
    os.rename(path, tmp_path / "postgresql.log.1")  # rename + a new, empty file
    path.write_text("")
    got += list(reader)
    assert len(got) == whole


def test_a_log_that_grows_while_read_is_fine(tmp_path):
    path = big_log(tmp_path)
    reader = S.read([path])
    n = sum(1 for _ in (next(reader) for _ in range(50)))
    with open(path, "ab") as f:  # the server goes on logging
        f.write((FIX / "healthy.postgresql.log").read_bytes()[:100_000])
    n += sum(1 for _ in reader)
    assert n > 50


def test_a_gzip_log_that_ends_early_is_unreachable(tmp_path):
    data = gzip.compress((FIX / "healthy.postgresql.log").read_bytes())
    path = tmp_path / "postgresql.log.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceUnreachable) as e:
        for _ in S.read([path]):
            pass
    assert "the compressed file ends early" in e.value.reason


class _FailingRaw(io.RawIOBase):
    """A file whose disk fails after the first 64 kB (EIO)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self):
        return True

    def readinto(self, b):
        if self.pos >= 65536:
            raise OSError(5, "Input/output error")
        n = min(len(b), 65536 - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_a_read_error_mid_log_is_unreachable(tmp_path, monkeypatch):
    data = (FIX / "healthy.postgresql.log").read_bytes()
    monkeypatch.setattr(S, "_open", lambda path: io.TextIOWrapper(io.BufferedReader(_FailingRaw(data)),
                                                                  encoding="utf-8", errors="replace"))
    with pytest.raises(SourceUnreachable) as e:
        for _ in S.read_postgres_log("/var/log/postgresql/postgresql.log"):
            pass
    assert e.value.reason.startswith("read failed: Input/output error")


# --------------------------------------------------------------------------- Redis


def test_redis_reasons_are_one_phrase_without_the_address():
    import redis

    from perfbook.sources import error_reason, redis as R

    for exc, reason in [
        (redis.ConnectionError("Error while reading from 10.0.0.7:6379 : (104, 'Connection reset by peer')"),
         "Connection reset"),
        (redis.ConnectionError("Connection closed by server."), "Connection closed by server"),
        (redis.ConnectionError("Error 111 connecting to 10.0.0.7:6379. Connection refused."), "Connection refused"),
    ]:
        assert error_reason(exc, detail=True) == reason
        with pytest.raises(SourceUnreachable) as e:
            R._call("redis://:pw@10.0.0.7:6379/0", lambda: (_ for _ in ()).throw(exc))
        assert e.value.reason == reason and e.value.target == "redis://10.0.0.7:6379/0"


def test_one_error_reason_for_every_source():
    import redis
    import requests

    from perfbook.sources import error_reason

    refused = requests.ConnectionError("HTTPConnectionPool(host='10.0.0.7', port=9090): Max retries exceeded with url: "
                                       "/api/v1/query?query=up (Caused by NewConnectionError('<urllib3.connection."
                                       "HTTPConnection object at 0x7f>: Failed to establish a new connection: "
                                       "[Errno 111] Connection refused'))")
    assert error_reason(refused) == error_reason(refused, 5) == "Connection refused"
    assert error_reason(requests.ReadTimeout("read timed out"), 2) == "no answer within 2 s"
    assert error_reason(requests.ReadTimeout("x")) == "timed out"
    assert error_reason(redis.TimeoutError("Timeout reading from socket")) == "timed out"
    assert error_reason(requests.ConnectionError("[Errno -3] Temporary failure in name resolution")) == \
        "[Errno -3] Temporary failure in name resolution"
    assert error_reason(requests.exceptions.SSLError("... CERTIFICATE_VERIFY_FAILED ...")) == \
        "TLS certificate verification failed"
    assert error_reason(ValueError("http://user:pw@host/")) == "ValueError"   # no URL, no secret
    assert error_reason(redis.ResponseError("ERR unknown command"), detail=True) == "ResponseError: ERR unknown command"
