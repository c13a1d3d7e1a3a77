"""SQL statement shapes, pure: walking a statement parsed by pglast, shared by the
PostgreSQL source (its read-only guard, :mod:`perfbook.sources.postgres`) and the
database checks (statement shapes, :mod:`perfbook.checks.database`).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["walk", "func_name"]


def walk(node: Any) -> Iterator[Any]:
    """Every pglast AST node under ``node`` (itself included; lists and tuples are
    descended into), depth first."""
    from pglast import ast

    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (list, tuple)):
            stack.extend(n)
        elif isinstance(n, ast.Node):
            yield n
            for name in n.__slots__:
                value = getattr(n, name, None)
                if isinstance(value, (ast.Node, list, tuple)):
                    stack.append(value)


def func_name(call: Any) -> str:
    """A ``FuncCall``'s name as written, schema included (``pg_catalog.now``)."""
    return ".".join(getattr(p, "sval", "") for p in (call.funcname or ()))
