"""Locust's distributed mode, as perfbook runs it for load beyond one process.

Starts: a trivial HTTP endpoint on 127.0.0.1 (a raw asyncio server in this process), then
one locust master (``--master --expect-workers 2``, bound to 127.0.0.1) and two local
workers (``--worker``), headless, for a few seconds, through
:func:`perfbook.sources.loadgen.run`. Checks locust's stats CSV, the master's summary,
and the requests the endpoint actually counted.
"""
from __future__ import annotations

import asyncio
import threading

import pandas as pd
import pytest

from perfbook.params import Params
from perfbook.sources import loadgen

pytestmark = pytest.mark.integration

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class CountingServer:
    """HTTP/1.1 keep-alive endpoint answering 200 "ok" to anything; counts requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> CountingServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_one_master_and_two_local_workers_share_the_load(tmp_path):
    with CountingServer() as server:
        params = Params.model_validate({
            "service": "trivial", "targets": {"base_url": f"http://127.0.0.1:{server.port}"},
            "settings": {"load_test": {"mode": "load", "users": 4, "duration": "4s", "think_time": "50ms",
                                       "workers": 2, "mix": {"GET /health": 1}}}})
        plan = loadgen.plan_from_params(params)
        assert plan.refused is None and plan.workers == 2
        run = loadgen.run(plan, workdir=tmp_path)

    assert len(run.stages) == 1
    stage = run.stages[0]
    assert stage.exit_code == 0, stage.log_tail
    csv = pd.read_csv(tmp_path / "stage00_stats.csv")
    agg = csv[csv["Name"] == "Aggregated"].iloc[0]
    assert agg["Request Count"] > 20 and agg["Failure Count"] == 0
    import json
    summary = json.loads((tmp_path / "stage00_summary.json").read_text())
    assert summary["workers"] == 2                       # both workers were running the users
    total = summary["total"]["requests"]
    assert total >= agg["Request Count"]                 # the CSV is a snapshot; the summary is final
    assert server.requests >= total                      # every counted request reached the endpoint
    assert server.connections >= 2                       # from more than one user/worker
    assert stage.stats[stage.stats["name"] == "GET /health"]["requests"].iloc[0] == total
