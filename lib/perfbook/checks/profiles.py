"""Issue 1 §2 "Identify hot paths" and §3 "Identify leaking objects", from V8 profiles.

Pure functions over what :mod:`perfbook.sources.profiles` reads:

- :func:`hot_functions` — a ``.cpuprofile`` as Chrome DevTools' *Bottom-Up* view: time
  per function by **self time** (the function's own code), with its total (inclusive)
  time; :func:`hot_paths` charges each sample to the innermost frame of *application*
  code instead (so ``JSON.parse`` or ``crypto`` work counts against the app function that
  called it: the line to change). :func:`hot_path_findings` names the top ones.
- :func:`heap_summary` — a heap snapshot as DevTools' *Summary* view: objects per
  constructor with count, self (shallow) size and retained size (from the dominator tree,
  Cooper-Harvey-Kennedy; weak edges are not retaining, as in DevTools).
  :func:`heap_growth` compares two snapshots (DevTools' *Comparison* view: count delta,
  size delta) and :func:`leak_findings` names the constructors that grew most.

Time in a ``.cpuprofile``: sample *i* lasts until sample *i+1* (timestamps are
``startTime + cumsum(timeDeltas)``, microseconds); the last one until ``endTime``. That
is how DevTools' CPUProfileDataModel charges time.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from ..findings import Finding

#: Pseudo-frames of a V8 CPU profile: not code anyone can change.
PSEUDO_FRAMES = ("(root)", "(program)", "(idle)", "(garbage collector)")

#: Dominator tree (retained sizes) only up to this many nodes: the pure-Python algorithm
#: takes about 1 s per 100k nodes. Larger snapshots get self sizes only.
MAX_RETAINED_NODES = 1_500_000


# --------------------------------------------------------------------------- CPU profiles


def _location(frame: dict[str, Any]) -> str:
    url = frame.get("url") or ""
    line = int(frame.get("lineNumber", -1))
    if not url:
        return "(native)" if frame.get("functionName") not in PSEUDO_FRAMES else ""
    short = url.rsplit("/", 1)[-1] if url.startswith("file://") or url.startswith("/") else url
    return f"{short}:{line + 1}" if line >= 0 else short


def _function(frame: dict[str, Any]) -> str:
    return frame.get("functionName") or "(anonymous)"


def is_app_frame(frame: dict[str, Any]) -> bool:
    """Application code: has a script URL that is neither Node's own (``node:``) nor a
    dependency (``node_modules``)."""
    url = frame.get("url") or ""
    return bool(url) and not url.startswith("node:") and "node_modules" not in url and not url.startswith("internal/")


def _sample_times(profile: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(node id per sample, microseconds charged to it)."""
    samples = np.asarray(profile["samples"], dtype=np.int64)
    deltas = np.asarray(profile["timeDeltas"], dtype=np.float64)
    if samples.size == 0:
        return samples, deltas
    stamps = float(profile.get("startTime", 0)) + np.cumsum(deltas)
    end = max(float(profile.get("endTime", stamps[-1])), stamps[-1])
    durations = np.diff(np.append(stamps, end))
    return samples, np.clip(durations, 0, None)


def _tree(profile: dict[str, Any]) -> tuple[dict[int, dict], dict[int, int]]:
    nodes = {int(n["id"]): n for n in profile["nodes"]}
    parent: dict[int, int] = {}
    for n in profile["nodes"]:
        for c in n.get("children", []) or []:
            parent[int(c)] = int(n["id"])
    for n in profile["nodes"]:  # older format: "parent" instead of "children"
        if "parent" in n and int(n["id"]) not in parent:
            parent[int(n["id"])] = int(n["parent"])
    return nodes, parent


def profile_summary(profile: dict[str, Any]) -> dict[str, float]:
    """Duration, idle, GC and busy milliseconds of a CPU profile, and its sample count."""
    nodes, _ = _tree(profile)
    samples, us = _sample_times(profile)
    by_name: dict[str, float] = defaultdict(float)
    for nid, t in zip(samples.tolist(), us.tolist()):
        by_name[_function(nodes[nid]["callFrame"]) if nid in nodes else "?"] += t
    total = float(us.sum())
    idle = by_name.get("(idle)", 0.0)
    busy = total - idle
    return {"duration_ms": total / 1000, "idle_ms": idle / 1000, "busy_ms": busy / 1000,
            "gc_ms": by_name.get("(garbage collector)", 0.0) / 1000,
            "program_ms": by_name.get("(program)", 0.0) / 1000,
            "samples": int(samples.size),
            "gc_share_of_busy": (by_name.get("(garbage collector)", 0.0) / busy) if busy else 0.0}


def hot_functions(profile: dict[str, Any], top: int = 15) -> pd.DataFrame:
    """Functions by self time (DevTools Bottom-Up), the ``top`` first.

    Columns: ``function``, ``location`` (``file.js:line``; ``(native)`` for V8 builtins),
    ``self_ms``, ``self_pct`` (of busy = non-idle time), ``total_ms``, ``total_pct``
    (inclusive: the function or anything it called; recursion counted once), ``app``
    (application code or not). Pseudo-frames ``(program)``, ``(garbage collector)`` are
    kept (they are where the time went); ``(idle)`` and ``(root)`` are not.
    """
    nodes, parent = _tree(profile)
    samples, us = _sample_times(profile)
    node_self: dict[int, float] = defaultdict(float)
    for nid, t in zip(samples.tolist(), us.tolist()):
        node_self[nid] += t
    busy = float(us.sum()) - sum(t for nid, t in node_self.items()
                                 if nid in nodes and _function(nodes[nid]["callFrame"]) == "(idle)")

    def key(nid: int) -> tuple[str, str, str]:
        f = nodes[nid]["callFrame"]
        return _function(f), _location(f), f.get("url") or ""

    self_by: dict[tuple, float] = defaultdict(float)
    total_by: dict[tuple, float] = defaultdict(float)
    for nid, t in node_self.items():
        if nid not in nodes:
            continue
        self_by[key(nid)] += t
        seen: set[tuple] = set()
        cur: int | None = nid
        while cur is not None and cur in nodes:
            k = key(cur)
            if k not in seen:
                seen.add(k)
                total_by[k] += t
            cur = parent.get(cur)
    rows = []
    for k, t in self_by.items():
        if k[0] in ("(idle)", "(root)"):
            continue
        rows.append({"function": k[0], "location": k[1], "self_ms": t / 1000,
                     "self_pct": 100 * t / busy if busy else 0.0,
                     "total_ms": total_by[k] / 1000, "total_pct": 100 * total_by[k] / busy if busy else 0.0,
                     "app": is_app_frame({"url": k[2]})})
    out = pd.DataFrame(rows, columns=["function", "location", "self_ms", "self_pct", "total_ms", "total_pct", "app"])
    return out.sort_values(["self_ms", "total_ms"], ascending=False).head(top).reset_index(drop=True)


def hot_paths(profile: dict[str, Any], top: int = 10) -> pd.DataFrame:
    """Application functions by the time charged to them: each sample goes to the
    innermost frame of application code on its stack (:func:`is_app_frame`), so native,
    Node-internal and ``node_modules`` work counts against the app code that called it.

    Columns: ``function``, ``location``, ``app_ms``, ``app_pct`` (of busy time),
    ``called_into`` (the innermost non-app frame most often below it, e.g. ``digest``).
    Samples with no application frame (GC, idle, Node start-up) are not charged.
    """
    nodes, parent = _tree(profile)
    samples, us = _sample_times(profile)
    idle = {nid for nid, n in nodes.items() if _function(n["callFrame"]) == "(idle)"}
    busy = float(sum(t for nid, t in zip(samples.tolist(), us.tolist()) if nid not in idle))
    charged: dict[tuple, float] = defaultdict(float)
    below: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cache: dict[int, tuple | None] = {}

    def owner(nid: int) -> tuple | None:
        if nid in cache:
            return cache[nid]
        cur: int | None = nid
        while cur is not None and cur in nodes and not is_app_frame(nodes[cur]["callFrame"]):
            cur = parent.get(cur)
        found = None
        if cur is not None and cur in nodes:
            f = nodes[cur]["callFrame"]
            found = (_function(f), _location(f))
        cache[nid] = found
        return found

    for nid, t in zip(samples.tolist(), us.tolist()):
        if nid not in nodes or nid in idle:
            continue
        k = owner(nid)
        if k is None:
            continue
        charged[k] += t
        f = nodes[nid]["callFrame"]
        if not is_app_frame(f):
            below[k][_function(f)] += t
    rows = [{"function": k[0], "location": k[1], "app_ms": t / 1000, "app_pct": 100 * t / busy if busy else 0.0,
             "called_into": max(below[k].items(), key=lambda kv: kv[1])[0] if below.get(k) else ""}
            for k, t in charged.items()]
    out = pd.DataFrame(rows, columns=["function", "location", "app_ms", "app_pct", "called_into"])
    return out.sort_values("app_ms", ascending=False).head(top).reset_index(drop=True)


def hot_path_findings(paths: pd.DataFrame, summary: dict[str, float], source: str = "", *,
                      hot_share: float, gc_share: float) -> list[Finding]:
    """``cpu.saturation`` *info* findings naming where a CPU profile's time goes.

    One per application function charged at least ``hot_share`` of busy time
    (settings.diagnostics.hot_path_share; the runbook's "identify hot paths"), one if garbage
    collection takes ``gc_share`` (settings.diagnostics.gc_share) or more (allocation churn),
    else one ``ok``. Info, not warning: a profile shows where CPU
    goes, not that there is too little of it — the metrics checks judge saturation.
    """
    found = []
    busy = summary.get("busy_ms") or 0.0
    for rec in paths.to_dict("records"):
        if busy and rec["app_ms"] / busy >= hot_share:
            via = f", mostly inside {rec['called_into']}" if rec.get("called_into") else ""
            found.append(Finding(
                "cpu.saturation", "info",
                f"CPU profile: {rec['function']} ({rec['location']}) takes {rec['app_pct']:.0f}% of busy CPU time{via}",
                subject=f"{rec['function']} ({rec['location']})",
                evidence={"function": rec["function"], "location": rec["location"],
                          "cpu_ms": round(rec["app_ms"], 1), "share_of_busy": round(rec["app_pct"] / 100, 3),
                          "called_into": rec.get("called_into", ""), "profile": source,
                          "profile_busy_ms": round(busy, 1)},
                recommendation="A hot path on the event loop (runbook Issue 1 §2): make it asynchronous or move it "
                               "to a worker thread / background job; for large JSON use a streaming parser, for "
                               "regexes on big strings simpler patterns or string methods; cache results that "
                               "repeat."))
    if busy and summary.get("gc_ms", 0.0) / busy >= gc_share:
        found.append(Finding(
            "cpu.saturation", "info",
            f"CPU profile: garbage collection takes {100 * summary['gc_ms'] / busy:.0f}% of busy CPU time",
            subject="(garbage collector)",
            evidence={"gc_ms": round(summary["gc_ms"], 1), "share_of_busy": round(summary["gc_ms"] / busy, 3),
                      "profile": source},
            recommendation="Allocation churn: reuse buffers, avoid building large temporary arrays/strings per "
                           "request; check the heap for growth (memory section of this notebook)."))
    if not found:
        found.append(Finding("cpu.saturation", "ok",
                             f"CPU profile: no single application function takes {hot_share:.0%} of busy time",
                             subject="cpu profile", evidence={"profile": source, "busy_ms": round(busy, 1)}))
    return found


# --------------------------------------------------------------------------- heap snapshots

_TYPE_CLASS = {"hidden": "(system)", "array": "(array)", "string": "(string)", "concatenated string": "(string)",
               "sliced string": "(string)", "code": "(compiled code)", "closure": "(closure)",
               "regexp": "(regexp)", "number": "(number)", "symbol": "(symbol)", "bigint": "(bigint)",
               "object shape": "(object shape)"}


def class_names(snap: Any) -> np.ndarray:
    """Per node, the constructor / class name the DevTools Summary groups it under:
    the node's name for objects, native and synthetic nodes, ``(string)``, ``(array)``,
    ``(closure)``, ``(compiled code)``, ``(system)``... for the others."""
    names = np.empty(snap.node_count, dtype=object)
    types = np.asarray(snap.type_names, dtype=object)[snap.node_type]
    by_name = np.asarray(snap.strings, dtype=object)[snap.node_name]
    for t in np.unique(types):
        mask = types == t
        names[mask] = _TYPE_CLASS[t] if t in _TYPE_CLASS else by_name[mask]
    return names


def dominators(snap: Any) -> np.ndarray:
    """Immediate dominator of every node (-1 when unreachable from the root, node 0),
    over the non-weak edges, by Cooper-Harvey-Kennedy's iterative algorithm."""
    n = snap.node_count
    weak = snap.edge_type_names.index("weak") if "weak" in snap.edge_type_names else -1
    src = np.repeat(np.arange(n, dtype=np.int64), snap.edge_count)
    keep = snap.edge_type != weak
    s, t = src[keep], snap.edge_to[keep]
    # successor lists (CSR)
    order = np.argsort(s, kind="stable")
    succ_to = t[order].tolist()
    succ_start = np.searchsorted(s[order], np.arange(n + 1)).tolist()
    # iterative DFS postorder from the root
    post_num = [-1] * n
    postorder: list[int] = []
    visited = [False] * n
    visited[0] = True
    stack = [(0, succ_start[0])]
    while stack:
        v, i = stack[-1]
        if i < succ_start[v + 1]:
            stack[-1] = (v, i + 1)
            w = succ_to[i]
            if not visited[w]:
                visited[w] = True
                stack.append((w, succ_start[w]))
        else:
            stack.pop()
            post_num[v] = len(postorder)
            postorder.append(v)
    # predecessor lists (CSR) restricted to reachable sources
    order = np.argsort(t, kind="stable")
    pred_from = s[order].tolist()
    pred_start = np.searchsorted(t[order], np.arange(n + 1)).tolist()
    idom = [-1] * n
    idom[0] = 0
    rpo = postorder[::-1]
    changed = True
    while changed:
        changed = False
        for v in rpo:
            if v == 0:
                continue
            new = -1
            for j in range(pred_start[v], pred_start[v + 1]):
                p = pred_from[j]
                if idom[p] == -1:
                    continue
                if new == -1:
                    new = p
                    continue
                a, b = p, new
                while a != b:
                    while post_num[a] < post_num[b]:
                        a = idom[a]
                    while post_num[b] < post_num[a]:
                        b = idom[b]
                new = a
            if new != -1 and idom[v] != new:
                idom[v] = new
                changed = True
    out = np.asarray(idom, dtype=np.int64)
    out.flags.writeable = True
    return out


def retained_sizes(snap: Any, idom: np.ndarray) -> np.ndarray:
    """Retained size of every node: its self size plus that of every node it dominates
    (0 for unreachable nodes)."""
    reachable = idom >= 0
    ret = np.where(reachable, snap.self_size, 0).astype(np.float64).tolist()
    parent = idom.tolist()
    # reversed preorder of the dominator tree: every node before its dominator
    for v in reversed(_dom_preorder(idom)[1:]):
        ret[parent[v]] += ret[v]
    return np.asarray(ret)


def _dom_children(idom: np.ndarray) -> tuple[list[int], list[int]]:
    n = idom.size
    nodes = np.nonzero((idom >= 0) & (np.arange(n) != 0))[0]
    parents = idom[nodes]
    order = np.argsort(parents, kind="stable")
    kids = nodes[order].tolist()
    start = np.searchsorted(parents[order], np.arange(n + 1)).tolist()
    return kids, start


def _dom_preorder(idom: np.ndarray) -> list[int]:
    kids, start = _dom_children(idom)
    out, stack = [], [0]
    while stack:
        v = stack.pop()
        out.append(v)
        stack.extend(kids[start[v]:start[v + 1]])
    return out


def heap_summary(snap: Any, retained: bool = True, max_nodes: int = MAX_RETAINED_NODES) -> pd.DataFrame:
    """Objects per constructor (DevTools Summary): ``constructor``, ``count``,
    ``self_size`` and ``retained_size`` (bytes).

    A constructor's retained size is the sum of the retained sizes of its objects that
    are not themselves retained by another object of the same constructor (so a linked
    list is not counted once per element), as DevTools computes it. Without ``retained``
    or above ``max_nodes`` nodes, ``retained_size`` is NaN.
    """
    names = class_names(snap)
    codes, uniques = pd.factorize(pd.Series(names, dtype=object), sort=False)
    df = pd.DataFrame({"code": codes, "self": snap.self_size})
    agg = df.groupby("code").agg(count=("self", "size"), self_size=("self", "sum"))
    agg["retained_size"] = np.nan
    if retained and snap.node_count <= max_nodes:
        idom = dominators(snap)
        ret = retained_sizes(snap, idom)
        kids, start = _dom_children(idom)
        class_ret = np.zeros(len(uniques), dtype=np.float64)
        on_path = np.zeros(len(uniques), dtype=np.int64)
        stack: list[tuple[int, bool]] = [(0, False)]
        while stack:
            v, leaving = stack.pop()
            c = codes[v]
            if leaving:
                on_path[c] -= 1
                continue
            if on_path[c] == 0 and v != 0:
                class_ret[c] += ret[v]
            on_path[c] += 1
            stack.append((v, True))
            stack.extend((w, False) for w in kids[start[v]:start[v + 1]])
        agg["retained_size"] = class_ret[agg.index.to_numpy()]
    agg.insert(0, "constructor", [uniques[i] for i in agg.index])
    # Synthetic nodes ((GC roots), (Stack roots)...) are V8's bookkeeping; their retained size
    # is the whole heap again. DevTools' Summary leaves them out too.
    synthetic = {names[i] for i in np.nonzero(np.asarray(snap.type_names, dtype=object)[snap.node_type] == "synthetic")[0]}
    agg = agg[~agg["constructor"].isin(synthetic)]
    sort = "retained_size" if agg["retained_size"].notna().any() else "self_size"
    out = agg.sort_values(sort, ascending=False).reset_index(drop=True)
    out.attrs.update(total_size=snap.total_size, node_count=snap.node_count, path=getattr(snap, "path", ""))
    return out


def heap_growth(before: pd.DataFrame, after: pd.DataFrame, top: int = 15) -> pd.DataFrame:
    """Constructors that grew most between two :func:`heap_summary` tables (DevTools
    Comparison): ``constructor``, ``count_before``, ``count_after``, ``count_delta``,
    ``self_delta``, ``retained_before``, ``retained_after``, ``retained_delta`` (bytes),
    ``share_of_growth`` (self delta over the total heap growth). Sorted by retained
    delta when both snapshots have retained sizes, else by self delta."""
    b = before.set_index("constructor")
    a = after.set_index("constructor")
    idx = a.index.union(b.index)
    b, a = b.reindex(idx), a.reindex(idx)
    out = pd.DataFrame({
        "constructor": idx,
        "count_before": b["count"].fillna(0).astype(int).to_numpy(),
        "count_after": a["count"].fillna(0).astype(int).to_numpy(),
        "self_before": b["self_size"].fillna(0).to_numpy(),
        "self_after": a["self_size"].fillna(0).to_numpy(),
        "retained_before": b["retained_size"].to_numpy(dtype=float),
        "retained_after": a["retained_size"].to_numpy(dtype=float),
    })
    out["count_delta"] = out["count_after"] - out["count_before"]
    out["self_delta"] = out["self_after"] - out["self_before"]
    out["retained_delta"] = out["retained_after"].fillna(0) - out["retained_before"].fillna(0)
    has_retained = before["retained_size"].notna().any() and after["retained_size"].notna().any()
    if not has_retained:
        out["retained_delta"] = np.nan
    growth = float(after.attrs.get("total_size", out["self_after"].sum()) - before.attrs.get("total_size", out["self_before"].sum()))
    out["share_of_growth"] = out["self_delta"] / growth if growth > 0 else np.nan
    out = out.sort_values("retained_delta" if has_retained else "self_delta", ascending=False)
    out.attrs.update(before_total=before.attrs.get("total_size"), after_total=after.attrs.get("total_size"),
                     growth=growth, retained=has_retained)
    cols = ["constructor", "count_before", "count_after", "count_delta", "self_delta",
            "retained_before", "retained_after", "retained_delta", "share_of_growth"]
    res = out[cols].head(top).reset_index(drop=True)
    res.attrs.update(out.attrs)
    return res


def is_user_constructor(name: str) -> bool:
    """A constructor an application defines or instantiates (``LeakedRequestContext``,
    ``Array``, ``Object``) rather than V8's internal groups (``(string)``, ``(system)``,
    ``system / Context``)."""
    return bool(name) and not name.startswith("(") and not name.startswith("system /")


def leak_findings(growth: pd.DataFrame, source: str = "", *, min_growth_share: float) -> list[Finding]:
    """``memory.growth`` from two heap snapshots (the runbook's "identify leaking objects").

    Warning when the heap grew by at least ``min_growth_share`` between the snapshots (the
    same bar as the memory-growth check on metrics: settings.diagnostics.growth_min_share):
    the subject is the application constructor that grew most (by retained size when
    known, else self size), with its count and size deltas and the runners-up in the
    evidence. Otherwise one ``ok`` finding.
    """
    before_total = growth.attrs.get("before_total") or 0
    after_total = growth.attrs.get("after_total") or 0
    grew = after_total - before_total
    share = grew / before_total if before_total else 0.0
    key = "retained_delta" if growth.attrs.get("retained") else "self_delta"
    candidates = growth[growth["constructor"].map(is_user_constructor) & (growth[key] > 0)]
    if share < min_growth_share or candidates.empty:
        return [Finding("memory.growth", "ok",
                        f"Heap snapshots: heap grew {share:.0%} between them (under {min_growth_share:.0%}); "
                        f"no leaking constructor",
                        subject="heap snapshots",
                        evidence={"heap_before_mb": round(before_total / 2**20, 2),
                                  "heap_after_mb": round(after_total / 2**20, 2), "growth_share": round(share, 3),
                                  "snapshots": source})]
    top = candidates.iloc[0]
    others = [f"{r['constructor']} (+{int(r['count_delta'])}, +{r[key] / 2**20:.2f} MB)"
              for r in candidates.iloc[1:4].to_dict("records")]
    size_word = "retained" if key == "retained_delta" else "self size"
    return [Finding(
        "memory.growth", "warning",
        f"Heap snapshots: heap grew {share:.0%}; {top['constructor']} grew most "
        f"(+{int(top['count_delta'])} objects, +{top[key] / 2**20:.2f} MB {size_word})",
        subject=str(top["constructor"]),
        evidence={"constructor": top["constructor"], "count_before": int(top["count_before"]),
                  "count_after": int(top["count_after"]), "count_delta": int(top["count_delta"]),
                  "size_delta_mb": round(float(top[key]) / 2**20, 3), "size_kind": size_word,
                  "heap_before_mb": round(before_total / 2**20, 2), "heap_after_mb": round(after_total / 2**20, 2),
                  "growth_share": round(share, 3), "runners_up": others, "snapshots": source},
        recommendation=f"Find what keeps {top['constructor']} objects alive: in Chrome DevTools (Memory tab) "
                       f"load both snapshots, choose Comparison, select {top['constructor']} and read its "
                       f"Retainers. Typical causes (runbook Issue 1 §3): listeners never removed, module-level "
                       f"arrays/maps that only grow, caches without TTL or size limit. Immediate relief: restart "
                       f"(`flyctl apps restart`) or more memory; the fix is the cleanup.")]
