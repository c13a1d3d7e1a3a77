"""V8 profiles: CPU profiles (``.cpuprofile``) and heap snapshots (``.heapsnapshot``).

I/O only: read the files the params name (``targets.cpu_profile``,
``targets.heap_snapshots``) and decode them into plain data. The analysis (hot functions,
constructors that grew) is in :mod:`perfbook.checks.profiles`.

Where the files come from (the runbook's Issue 1 §2 and §3):

- ``node --cpu-prof app.js`` writes a ``.cpuprofile`` when the process exits; Chrome
  DevTools' Performance/Profiler panel and ``inspector`` ``Profiler.stop`` write the same
  JSON (``nodes``, ``samples``, ``timeDeltas``, ``startTime``, ``endTime``, microseconds).
- ``kill -USR2 <pid>`` with ``node --heapsnapshot-signal=SIGUSR2``, or
  ``v8.writeHeapSnapshot()``, writes a ``.heapsnapshot``: one JSON object whose nodes and
  edges are flat integer arrays described by ``snapshot.meta``.

Files may be plain, gzip (``.gz``) or xz (``.xz``) compressed. A heap snapshot is read
whole into memory (about 3x its size on disk as Python objects while parsing); snapshots
of big production heaps are better compared in DevTools, or taken of a smaller replica.
"""
from __future__ import annotations

import gzip
import json
import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfbook.sources import SourceError, SourceUnreachable

__all__ = ["locate", "read_json", "read_cpuprofile", "read_heapsnapshot", "HeapSnapshot"]

SOURCE = "profiles"


def locate(path: str | Path, params_file: str | Path | None = None) -> Path:
    """A profile path from the params: ``~`` expanded; relative paths are relative to the
    params file's folder (where the file that names them lives), else to the working dir."""
    p = Path(path).expanduser()
    if not p.is_absolute() and params_file:
        p = Path(params_file).expanduser().resolve().parent / p
    return p


def _open(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    """A (possibly .gz/.xz compressed) JSON file. A missing file raises
    :class:`SourceUnreachable`; one that is not JSON, :class:`SourceError`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SourceUnreachable(SOURCE, str(p), "no such file" if not p.exists() else "not a file")
    try:
        with _open(p) as fh:
            return json.load(fh)
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(SOURCE, str(p), f"cannot read as JSON: {type(exc).__name__}: {str(exc)[:200]}") from None


def read_cpuprofile(path: str | Path) -> dict[str, Any]:
    """A V8 CPU profile as its JSON dict (``nodes``, ``samples``, ``timeDeltas``,
    ``startTime``, ``endTime``). Checks the keys the analysis needs."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise SourceError(SOURCE, str(path), "not a .cpuprofile (expected a JSON object)")
    if "nodes" not in data and isinstance(data.get("profile"), dict):  # DevTools "Profiler.stop" answer
        data = data["profile"]
    missing = [k for k in ("nodes", "samples", "timeDeltas") if k not in data]
    if missing:
        raise SourceError(SOURCE, str(path), f"not a .cpuprofile: missing {', '.join(missing)}")
    data.setdefault("startTime", 0)
    data.setdefault("endTime", data["startTime"] + int(sum(data["timeDeltas"])))
    return data


@dataclass
class HeapSnapshot:
    """A V8 heap snapshot decoded into arrays (one entry per node / per edge).

    Nodes: ``node_type`` (index into :attr:`type_names`), ``node_name`` (index into
    :attr:`strings`), ``node_id`` (V8's object id, stable across snapshots of one
    process), ``self_size`` (bytes), ``edge_start``/``edge_count`` (the node's edges are
    ``edges[edge_start:edge_start+edge_count]``). Edges: ``edge_type`` (index into
    :attr:`edge_type_names`), ``edge_to`` (target *node index*, not array offset).
    Node 0 is the synthetic root.
    """

    path: str
    node_type: np.ndarray
    node_name: np.ndarray
    node_id: np.ndarray
    self_size: np.ndarray
    edge_start: np.ndarray
    edge_count: np.ndarray
    edge_type: np.ndarray
    edge_to: np.ndarray
    strings: list[str]
    type_names: list[str]
    edge_type_names: list[str]

    @property
    def node_count(self) -> int:
        return int(self.node_type.size)

    @property
    def total_size(self) -> int:
        return int(self.self_size.sum())


def read_heapsnapshot(path: str | Path) -> HeapSnapshot:
    """Read a ``.heapsnapshot`` (V8 JSON format, any V8 since Node 8) into a :class:`HeapSnapshot`."""
    data = read_json(path)
    try:
        meta = data["snapshot"]["meta"]
        node_fields: list[str] = meta["node_fields"]
        edge_fields: list[str] = meta["edge_fields"]
        type_names = list(meta["node_types"][node_fields.index("type")])
        edge_type_names = list(meta["edge_types"][edge_fields.index("type")])
        nodes = np.asarray(data["nodes"], dtype=np.int64)
        edges = np.asarray(data["edges"], dtype=np.int64)
        strings = data["strings"]
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise SourceError(SOURCE, str(path), f"not a V8 heap snapshot: {type(exc).__name__}: {exc}") from None
    nf, ef = len(node_fields), len(edge_fields)
    if nf == 0 or ef == 0 or nodes.size % nf or edges.size % ef:
        raise SourceError(SOURCE, str(path), "not a V8 heap snapshot: node/edge arrays do not match their fields")
    nodes = nodes.reshape(-1, nf)
    edges = edges.reshape(-1, ef)
    edge_count = nodes[:, node_fields.index("edge_count")]
    edge_start = np.concatenate([[0], np.cumsum(edge_count)[:-1]]) if len(edge_count) else edge_count
    if int(edge_count.sum()) != len(edges):
        raise SourceError(SOURCE, str(path), "not a V8 heap snapshot: edge counts do not add up")
    return HeapSnapshot(
        path=str(path),
        node_type=nodes[:, node_fields.index("type")].astype(np.int32),
        node_name=nodes[:, node_fields.index("name")],
        node_id=nodes[:, node_fields.index("id")],
        self_size=nodes[:, node_fields.index("self_size")],
        edge_start=edge_start.astype(np.int64),
        edge_count=edge_count.astype(np.int64),
        edge_type=edges[:, edge_fields.index("type")].astype(np.int32),
        edge_to=(edges[:, edge_fields.index("to_node")] // nf).astype(np.int64),
        strings=strings, type_names=type_names, edge_type_names=edge_type_names,
    )
