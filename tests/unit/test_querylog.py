"""Query-log reading and N+1 runs, on logs recorded from the demo stack's PostgreSQL 15
(log_min_duration_statement = 0, log_line_prefix '%m [%p] %c %q%u@%d ', psycopg's extended
protocol) and on small hand-written logs for the other forms."""
from __future__ import annotations

import gzip
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from perfbook.checks import querylog as Q
from perfbook.params import DEFAULT_ENDPOINTS, Endpoint, Params
from perfbook.sources import SourceUnreachable, querylog as S

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "postgres"
ENDPOINTS = [Endpoint(**e) for e in DEFAULT_ENDPOINTS]
DB, LIMITS = Params(service="x").settings.database, Params(service="x").settings.limits
P = "2026-11-26 22:30:05.{ms:03d} UTC [{pid}] 6b08b2e9.{sess} demo_app@demo "


def line(ms: int, text: str, pid: int = 100, sess: str = "5b11") -> str:
    return P.format(ms=ms, pid=pid, sess=sess) + text + "\n"


def test_n_plus_one_found_in_recorded_incident_log():
    a = Q.analyze(S.read([FIX / "incident.postgresql.log"]), DB, LIMITS)
    assert a.statements > 1000 and a.with_duration == a.statements
    _table, found = Q.n_plus_one_from_log(a, ENDPOINTS)
    [f] = [f for f in found if f.severity == "warning"]
    assert f.code == "db.n_plus_one"
    assert f.subject == "SELECT id, name, slug FROM categories WHERE id = $1"
    assert f.evidence["runs"] >= 10 and f.evidence["longest_run"] >= 20
    assert f.evidence["cost_ms"] >= 50 and f.evidence["source"] == "query log"


def test_recorded_healthy_log_has_no_n_plus_one():
    a = Q.analyze(S.read([FIX / "healthy.postgresql.log"]), DB, LIMITS)
    _, found = Q.n_plus_one_from_log(a, ENDPOINTS)
    assert [f.severity for f in found] == ["ok"]


def test_endpoint_borrowed_from_pg_stat_statements_finding():
    from perfbook.findings import Finding
    known = [Finding("db.n_plus_one", "warning", "x", evidence={
        "query": "SELECT id, name, slug FROM categories WHERE id = $1", "endpoint": "GET /api/products",
        "parent_query": "SELECT p.id, p.category_id FROM products p WHERE p.category_id = $1"})]
    a = Q.analyze(S.read([FIX / "incident.postgresql.log"]), DB, LIMITS)
    _, found = Q.n_plus_one_from_log(a, ENDPOINTS, known)
    f = [f for f in found if f.severity == "warning"][0]
    assert f.evidence["endpoint"] == "GET /api/products"
    assert "prisma.product.findMany" in f.recommendation and "include: { category: true }" in f.recommendation


def test_extended_protocol_parse_bind_time_added_to_execute(tmp_path):
    log = tmp_path / "pg.log"
    log.write_text(
        line(1, "LOG:  duration: 0.500 ms  parse <unnamed>: SELECT a\n\tFROM t WHERE id = $1")
        + line(1, "LOG:  duration: 0.250 ms  bind <unnamed>: SELECT a\n\tFROM t WHERE id = $1")
        + line(1, "DETAIL:  parameters: $1 = '5'")
        + line(2, "LOG:  duration: 0.125 ms  execute <unnamed>: SELECT a\n\tFROM t WHERE id = $1")
        + line(2, "DETAIL:  parameters: $1 = '5'"))
    [st] = list(S.read_postgres_log(log))
    assert st.duration_ms == pytest.approx(0.875)
    assert st.text == "SELECT a\nFROM t WHERE id = $1"  # continuation joined with a newline
    assert st.session == "6b08b2e9.5b11" and st.user == "demo_app" and st.database == "demo"


def test_log_statement_lines_get_their_duration(tmp_path):
    log = tmp_path / "pg.log"
    log.write_text(line(1, "LOG:  statement: SELECT 1") + line(2, "LOG:  duration: 3.000 ms")
                   + line(3, "LOG:  execute S_1: SELECT 2") + line(4, "ERROR:  boom")
                   + line(5, "STATEMENT:  SELECT 3"))
    got = list(S.read_postgres_log(log))
    assert [(s.text, s.duration_ms) for s in got] == [("SELECT 1", 3.0), ("SELECT 2", None)]


def test_runs_need_back_to_back_lookups_in_one_session(tmp_path):
    lookups = "".join(line(10 + i, f"LOG:  duration: 12.000 ms  statement: SELECT * FROM products WHERE id = {i}")
                      for i in range(6))
    spaced = "".join(line(100 + 40 * i, f"LOG:  duration: 12.000 ms  statement: SELECT * FROM products WHERE id = {i}",
                          sess="aaaa") for i in range(6))
    log = tmp_path / "pg.log"
    log.write_text(lookups + spaced)
    a = Q.analyze(S.read([log]), DB, LIMITS)
    assert len(a.runs) == 1
    r = a.runs.iloc[0]
    assert r["runs"] == 1 and r["statements"] == 6 and r["sessions"] == ["6b08b2e9.5b11"]
    assert r["cost_ms"] == pytest.approx(72.0)
    _, [f] = Q.n_plus_one_from_log(a, ENDPOINTS)
    assert f.severity == "warning" and f.subject == "SELECT * FROM products WHERE id = $1"
    assert f.evidence["endpoint"] == "GET /api/products"  # named from the table: the list route


def test_transaction_control_does_not_break_a_run_but_another_statement_does(tmp_path):
    body = []
    for i in range(5):
        body.append(line(i, f"LOG:  duration: 20.0 ms  statement: SELECT * FROM t WHERE k = {i}"))
        body.append(line(i, "LOG:  duration: 0.01 ms  statement: COMMIT"))
    body.append(line(6, "LOG:  duration: 1.0 ms  statement: UPDATE t SET a = 1"))
    for i in range(4):
        body.append(line(7 + i, f"LOG:  duration: 20.0 ms  statement: SELECT * FROM t WHERE k = {i}"))
    log = tmp_path / "pg.log"
    log.write_text("".join(body))
    a = Q.analyze(S.read([log]), DB, LIMITS)
    assert a.runs.iloc[0]["runs"] == 1 and a.runs.iloc[0]["statements"] == 5


def test_cheap_runs_are_info_not_warning(tmp_path):
    log = tmp_path / "pg.log"
    log.write_text("".join(line(1, f"LOG:  duration: 0.010 ms  statement: SELECT * FROM t WHERE k = {i}")
                           for i in range(5)))
    _, [f] = Q.n_plus_one_from_log(Q.analyze(S.read([log]), DB, LIMITS), ENDPOINTS)
    assert f.severity == "info"


def test_window_keeps_only_statements_inside(tmp_path):
    log = tmp_path / "pg.log"
    log.write_text(line(100, "LOG:  duration: 1 ms  statement: SELECT 1") +
                   "2026-11-26 23:00:00.000 UTC [1] 6b.1 u@d LOG:  duration: 1 ms  statement: SELECT 2\n")
    since = datetime(2026, 11, 26, 22, 59, tzinfo=timezone.utc)
    assert [s.text for s in S.read_postgres_log(log, since=since)] == ["SELECT 2"]


def test_prisma_query_lines(tmp_path):
    log = tmp_path / "app.log"
    rows = ['2025-10-31T12:00:00.000Z app[e784079b] iad [info] prisma:query SELECT "public"."Product"."id", '
            '"public"."Product"."categoryId" FROM "public"."Product" WHERE 1=1 ORDER BY "public"."Product"."createdAt" '
            'DESC LIMIT $1 OFFSET $2\n']
    rows += [f'2025-10-31T12:00:00.{8 * i:03d}Z app[e784079b] iad [info] prisma:query SELECT "public"."Category"."id", '
             f'"public"."Category"."name" FROM "public"."Category" WHERE ("public"."Category"."id" = $1 AND 1=1) '
             f'LIMIT $2 OFFSET $3\n' for i in range(1, 11)]
    rows += ['{"timestamp":"x","query":"SELECT 1","params":"[]","duration":3,"target":"quaint"}\n']
    log.write_text("".join(rows))
    assert S.sniff(log) == "prisma"
    got = list(S.read([log]))
    assert len(got) == 12 and got[0].session == "e784079b" and got[-1].duration_ms == 3.0
    a = Q.analyze(iter(got), DB, LIMITS)
    _, found = Q.n_plus_one_from_log(a, ENDPOINTS)
    f = [f for f in found if f.severity == "warning"][0]
    # no durations in Prisma's lines: the run's cost is its span in the log (9 gaps of 8 ms)
    assert "Category" in f.subject and f.evidence["longest_run"] == 10 and f.evidence["cost_ms"] == 72


def test_gzip_log_and_missing_file(tmp_path):
    gz = tmp_path / "pg.log.gz"
    with gzip.open(gz, "wt") as f:
        f.write(line(1, "LOG:  duration: 1 ms  statement: SELECT 1"))
    assert [s.text for s in S.read([gz])] == ["SELECT 1"]
    with pytest.raises(SourceUnreachable) as e:
        list(S.read([tmp_path / "nope.log"]))
    assert e.value.source == "logs"


def test_odd_bytes_do_not_crash_the_reader(tmp_path):
    log = tmp_path / "pg.log"
    log.write_bytes(line(1, "LOG:  duration: 1 ms  statement: SELECT 'caf\u00e9'").encode()
                    + P.format(ms=2, pid=1, sess="1").encode() + b"LOG:  duration: 1 ms  statement: SELECT '\xff\xfe'\n")
    got = list(S.read([log]))
    assert len(got) == 2 and "\ufffd" in got[1].text


def test_no_logs_configured_is_info():
    _, [f] = Q.n_plus_one_from_log(Q.analyze(iter(()), DB, LIMITS), ENDPOINTS, files=[])
    assert f.severity == "info" and "targets.postgres_logs" in f.title


def test_fingerprint_cache_groups_literals_and_parameters():
    fp = Q.Fingerprinter()
    a, kind = fp("SELECT * FROM products WHERE id = 1")
    b, _ = fp("SELECT * FROM products WHERE id = 2")
    c, _ = fp("SELECT * FROM products WHERE id = $1")
    assert a == b == c and kind == "lookup" and fp.misses == 1
    assert fp("COMMIT")[1] == "utility"


def test_memory_stays_flat_with_many_sessions():
    """The session table is bounded: 50k one-statement sessions keep < 30 MB live."""
    def stream():
        for i in range(50_000):
            yield S.Statement(f"s{i}", "2026-11-26 22:30:05.000 UTC", 0.1, f"SELECT * FROM t WHERE k = {i}", "u", "d")
    tracemalloc.start()
    a = Q.analyze(stream(), DB, LIMITS.model_copy(update={"max_log_sessions": 2_000}))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert a.statements == 50_000
    assert peak < 30 * 2**20


def _distinct(n: int, heavy_every: int = 0):
    """``n`` statements, each a distinct fingerprint (a different column); every
    ``heavy_every``-th one is the same costly statement."""
    for i in range(n):
        if heavy_every and i % heavy_every == 0:
            yield S.Statement("s", "", 500.0, "SELECT * FROM orders WHERE total > 1000", "u", "d")
        else:
            yield S.Statement("s", "", 0.1, f"SELECT c{i} FROM wide_table_{i % 7}", "u", "d")


def test_distinct_statements_are_capped_with_an_other_row():
    a = Q.analyze(_distinct(3_000, heavy_every=100), DB, LIMITS.model_copy(update={"max_fingerprints": 200}))
    fps = a.fingerprints
    assert len(fps) <= 200 + 1 and a.folded_fingerprints > 2_000
    other = fps[fps["fingerprint"] == Q.OTHER].iloc[0]
    assert other["calls"] + fps.loc[fps["fingerprint"] != Q.OTHER, "calls"].sum() == 3_000  # nothing lost
    top = a.top(1)
    assert top["query"].iloc[0].startswith("SELECT * FROM orders") and top["calls"].iloc[0] == 30  # costliest kept whole
    _, found = Q.n_plus_one_from_log(a, ENDPOINTS)
    [note] = [f for f in found if f.subject == "query log limits"]
    assert note.severity == "info" and "settings.limits.max_fingerprints (200)" in note.title


def test_distinct_statements_keep_memory_flat(monkeypatch):
    """Memory does not grow with distinct statements: 6k and 24k distinct ones peak alike
    (caches and tables are bounded; small caps here keep the test quick)."""
    monkeypatch.setattr(Q, "_CACHE_MAX", 1_000)

    def peak(n: int) -> int:
        tracemalloc.start()
        a = Q.analyze(_distinct(n), DB, LIMITS.model_copy(update={"max_fingerprints": 200}))
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert a.statements == n and len(a.fingerprints) <= 201
        return p
    small, large = peak(6_000), peak(24_000)
    assert large < 1.3 * small + 256 * 1024, (small, large)


def test_a_line_without_newline_is_cut_not_read_whole(tmp_path):
    log = tmp_path / "pg.log"
    with open(log, "w", encoding="utf-8") as f:
        f.write(line(1, "LOG:  duration: 1.000 ms  statement: SELECT 1"))
        f.write(P.format(ms=2, pid=100, sess="5b11") + "LOG:  duration: 2.000 ms  statement: SELECT '")
        f.write("x" * 3_000_000)          # 3 MB, no newline until the end of the file
    stream = S.read([log], limits=SimpleNamespace(max_line_length=4096))
    tracemalloc.start()
    got = list(stream)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [s.text for s in got][0] == "SELECT 1" and len(got) == 2 and len(got[1].text) < 4096
    assert stream.cut_lines == 1 and stream.longest_line > 3_000_000
    assert peak < 2 * 2**20   # the 3 MB line was never held
    a = Q.analyze(S.read([log], limits=SimpleNamespace(max_line_length=4096)), DB, LIMITS)
    assert a.cut_lines == 1 and "max_line_length (4,096 characters)" in a.limits_note()


def test_endless_continuation_lines_are_dropped_past_the_cap(tmp_path):
    log = tmp_path / "pg.log"
    log.write_text(line(1, "LOG:  duration: 1.000 ms  statement: SELECT a")
                   + "".join(f"\t, col{i}\n" for i in range(20_000))
                   + line(2, "LOG:  duration: 1.000 ms  statement: SELECT 2"))
    stream = S.read([log], limits=SimpleNamespace(max_line_length=2048))
    got = list(stream)
    assert [s.text for s in got][1] == "SELECT 2" and len(got[0].text) < 2 * 2048
    assert stream.cut_lines > 19_000
