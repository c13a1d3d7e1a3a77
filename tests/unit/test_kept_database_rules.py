"""The demo's kept database (seed.prepare_kept): when a run may go on with the cluster the
previous demo run left, and what is recorded about it. The real server: tests/integration/
test_demo_kept_db.py."""
from __future__ import annotations

import os

import pytest

from perfbook.demo import seed

KEY = "pg-seed-15-abc"


@pytest.mark.parametrize("recorded, faults, ok", [
    ([], set(), True),                                          # healthy, then healthy
    ([], {"missing_index", "bloat", "n_plus_one"}, True),       # healthy, then incident: faults added
    (["bloat", "missing_index"], {"missing_index", "bloat"}, True),   # incident, then incident
    (["missing_index"], set(), False),                          # incident, then healthy: the index is gone
    (["bloat"], {"missing_index"}, False),                      # the dead tuples would stay
])
def test_a_run_goes_on_only_by_adding_database_faults(recorded, faults, ok):
    assert seed.can_continue({"seed_key": KEY, "faults": recorded}, KEY, faults, initialized=True) is ok


def test_a_new_seed_or_no_cluster_starts_over():
    assert not seed.can_continue({"seed_key": "pg-seed-15-old", "faults": []}, KEY, set(), initialized=True)
    assert not seed.can_continue({"seed_key": KEY, "faults": []}, KEY, set(), initialized=False)
    assert not seed.can_continue({}, KEY, set(), initialized=True)


def test_the_record_is_rewritten_whole_and_a_broken_one_reads_as_empty(tmp_path):
    assert seed.kept_record(tmp_path) == {}
    seed.write_kept_record(tmp_path, seed_key=KEY, faults=["bloat"], port=5999, last_run=None)
    seed.write_kept_record(tmp_path, last_run="/runs/a")
    assert seed.kept_record(tmp_path) == {"seed_key": KEY, "faults": ["bloat"], "port": 5999, "last_run": "/runs/a"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / seed.KEPT_RECORD).write_text("{not json", encoding="utf-8")
    assert seed.kept_record(tmp_path) == {}


def test_the_kept_database_lives_in_the_cache_or_where_postgres_can_reach_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFBOOK_CACHE_DIR", str(tmp_path / "cache"))
    home = seed.kept_db_home()
    if os.geteuid() != 0:
        assert home == tmp_path / "cache" / "demo-db"
    else:   # root: the postgres OS user runs the server; pytest's tmp_path is private to root
        assert home in (tmp_path / "cache" / "demo-db", seed.Path("/var/tmp") / "perfbook-demo-db-0")
