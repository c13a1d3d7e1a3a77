"""Privilege levels of the session (part of :mod:`perfbook.checks.database`;
docs/database.md, "Privilege levels"): which level ran and what the next one adds.
"""
from __future__ import annotations

from ...findings import Finding
from .shapes import quote_ident

# --------------------------------------------------------------------------- privilege levels

#: The three privilege levels (docs/database.md, "Privilege levels"): each is fully useful,
#: each higher one adds verification. ``none`` is below the first (no pg_read_all_stats).
LEVELS: dict[str, tuple[int, str, str]] = {
    "none": (0, "without pg_monitor",
             "other roles' statements show as <insufficient privilege> and cannot be analysed"),
    "monitor": (1, "pg_monitor only",
                "statistics and statement texts: slow queries, N+1, large results, bloat, connections; "
                "index candidates from the statement text (pglast), not verified by EXPLAIN"),
    "read_all": (2, "pg_monitor + pg_read_all_data",
                 "index candidates verified (or refuted, saying why) by the planner's own plan (EXPLAIN)"),
    "hypopg": (3, "pg_monitor + pg_read_all_data + hypopg",
               "index candidates verified by EXPLAIN and by the planner's cost with each index, created "
               "hypothetically in perfbook's session only (hypopg)"),
}

#: What the next level needs (the SQL) and what it adds.
NEXT_LEVEL: dict[str, tuple[str, str, str]] = {
    "none": ("monitor", "GRANT pg_monitor TO {role};",
             "every role's statement texts (pg_read_all_stats) and the statistics views"),
    "monitor": ("read_all",
                "GRANT pg_read_all_data TO {role};  -- PostgreSQL 14+; before 14:\n"
                "-- GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};",
                "EXPLAIN of each index candidate: the planner confirms the sequential scan or says why "
                "the index is not needed"),
    "read_all": ("hypopg",
                 "-- as a superuser, in this database (Debian: apt install postgresql-<major>-hypopg):\n"
                 "CREATE EXTENSION hypopg;",
                 "the planner's estimated cost with each suggested index, created hypothetically (hypopg): "
                 "kept only when the cost at least halves (dexter's rule)"),
}


def privilege_level(priv: dict | None) -> tuple[str, list[Finding]]:
    """The privilege level the session has (``none``, ``monitor``, ``read_all``,
    ``hypopg``) from :func:`perfbook.sources.postgres.privileges`, and one ``info``
    ``db.privileges`` finding saying which level ran and what the next one would add.

    ``read_all`` needs SELECT on every user table (``pg_read_all_data``, a superuser, or
    plain grants); with SELECT on only some of them EXPLAIN verifies the candidates on
    those, and the level stays ``monitor``. ``hypopg`` is ``read_all`` with the hypopg
    extension created in the database."""
    if not priv:
        return "unknown", []
    role = priv.get("user") or "perfbook"
    tables = int(priv.get("tables") or 0)
    unreadable = list(priv.get("unreadable") or [])
    stats = bool(priv.get("superuser") or priv.get("read_all_stats"))
    reads_all = bool(priv.get("superuser") or priv.get("read_all_data") or (tables > 0 and not unreadable))
    if not stats:
        level = "none"
    elif reads_all:
        level = "hypopg" if priv.get("hypopg") else "read_all"
    else:
        level = "monitor"
    number, label, gives = LEVELS[level]
    partial = ""
    if level == "monitor" and tables and len(unreadable) < tables:
        partial = (f" (SELECT on {tables - len(unreadable)} of {tables} tables: EXPLAIN verifies the "
                   f"candidates on those)")
    title = f"Privilege level {number} of 3 — {label} (role {role}){partial}: {gives}."
    rec = ""
    nxt = NEXT_LEVEL.get(level)
    if nxt:
        nlevel, sql, adds = nxt
        title += f" Next level, {LEVELS[nlevel][1]}, adds {adds}"
        if nlevel == "hypopg" and not priv.get("hypopg_available"):
            title += " (the hypopg extension is not installed on this server)"
        rec = sql.format(role=quote_ident(role))
    else:
        title += " Nothing more to grant."
    ev = {"level": level, "level_number": number, "role": role, "superuser": bool(priv.get("superuser")),
          "pg_monitor": bool(priv.get("pg_monitor")), "pg_read_all_stats": bool(priv.get("read_all_stats")),
          "pg_read_all_data": bool(priv.get("read_all_data")), "tables": tables,
          "tables_without_select": len(unreadable), "examples_without_select": unreadable[:10],
          "hypopg_installed": bool(priv.get("hypopg")), "hypopg_available": bool(priv.get("hypopg_available")),
          "next_level": nxt[0] if nxt else None, "next_level_adds": nxt[2] if nxt else None}
    return level, [Finding("db.privileges", "info", title, subject=f"role {role}", evidence=ev,
                           recommendation=rec)]
