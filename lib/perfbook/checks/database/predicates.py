"""Which columns a statement filters, joins and sorts on, read from its text with pglast
(part of :mod:`perfbook.checks.database`, for the index candidates of runbook Issue 2
"Missing Indexes" at every privilege level).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...sql import walk
from .shapes import _AGGREGATES, UTILITY, _and_terms

# ------------------------------------------------ index candidates from the statement text


@dataclass
class RelationUse:
    """How one statement (one SELECT/UPDATE/DELETE level of it) reads one relation: the
    columns its WHERE (and JOIN ... ON) compare with a value, and its ORDER BY."""

    table: str
    schema: str | None
    alias: str
    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    order_by: list[tuple[str, bool]] = field(default_factory=list)
    limited: bool = False
    aggregate: bool = False
    #: the whole statement reads this relation and no other (rows per call are its rows)
    only_relation: bool = False

    @property
    def conditions(self) -> str:
        parts = [f"{c} = …" for c in self.equality] + [f"{c} range" for c in self.range]
        if self.order_by:
            parts.append("ORDER BY " + ", ".join(c + (" DESC" if d else "") for c, d in self.order_by))
        if self.limited:
            parts.append("LIMIT")
        return "; ".join(parts)


def _fields(ref: Any) -> list[str] | None:
    parts = [getattr(f, "sval", None) for f in ref.fields]
    return parts if parts and all(parts) else None


def statement_predicates(text: str, columns: dict[str, set[str]] | None = None) -> list[RelationUse]:
    """What an index could serve in ``text``, per relation read (pglast; the statement
    text alone, no privilege on the tables needed).

    Every SELECT level (subqueries, CTEs, UNION arms), UPDATE and DELETE of the statement is
    read on its own, with its own FROM: a term ``col = value``, ``col IN (...)``,
    ``col = ANY($1)``, ``col IN (SELECT ...)`` or ``col IS NULL`` is an *equality*;
    ``<``, ``>``, ``<=``, ``>=`` and ``BETWEEN`` a *range*. The value side may hold
    parameters, constants, functions of them (``now() - $1``), scalar subqueries and
    columns of an enclosing query (a correlated subquery); a term comparing two columns of
    the same level (a join condition), a function of the column (``lower(email) = $1``),
    an OR, LIKE and the like are left out. A column is attributed by its qualifier (the
    alias), else to the level's only relation, else (``columns``: table → its column
    names) to the one relation that has it. ORDER BY keeps its leading plain columns of one
    relation (not output aliases, not after GROUP BY or aggregates), with DESC.
    Relations named like a CTE of the statement are not tables and are skipped."""
    from pglast import ast, parse_sql
    from pglast.enums import A_Expr_Kind, NullTestType, SetOperation, SortByDir, SubLinkType

    if not text or UTILITY.match(text):
        return []
    try:
        stmts = parse_sql(text)
    except Exception:  # noqa: BLE001 - truncated texts, other dialects
        return []
    if len(stmts) != 1:
        return []
    root = stmts[0].stmt
    ctes = {n.ctename for n in walk(root) if isinstance(n, ast.CommonTableExpr)}
    relations = [n for n in walk(root) if isinstance(n, ast.RangeVar)
                 and not (n.schemaname is None and n.relname in ctes)]
    only = len({(n.schemaname, n.relname) for n in relations}) == 1 and len(relations) == 1
    out: list[RelationUse] = []

    def aggregates(sel: Any) -> bool:
        if sel.groupClause or getattr(sel, "distinctClause", None):
            return True
        stack = list(sel.targetList or ())
        while stack:
            n = stack.pop()
            if isinstance(n, ast.SubLink):
                continue
            if isinstance(n, ast.FuncCall) and (n.funcname[-1].sval or "").lower() in _AGGREGATES and not n.over:
                return True
            if isinstance(n, (list, tuple)):
                stack.extend(n)
            elif isinstance(n, ast.Node):
                stack.extend(v for v in (getattr(n, s, None) for s in n.__slots__)
                             if isinstance(v, (ast.Node, list, tuple)))
        return False

    for node in walk(root):
        if isinstance(node, ast.SelectStmt):
            if node.op not in (None, SetOperation.SETOP_NONE) or node.valuesLists:
                continue  # the arms of a UNION are SelectStmts of their own
            items, where, sort = list(node.fromClause or ()), node.whereClause, node.sortClause
            limited, agg, targets = node.limitCount is not None, aggregates(node), node.targetList or ()
        elif isinstance(node, ast.UpdateStmt):
            items, where, sort = [node.relation, *(node.fromClause or ())], node.whereClause, None
            limited, agg, targets = False, False, ()
        elif isinstance(node, ast.DeleteStmt):
            items, where, sort = [node.relation, *(node.usingClause or ())], node.whereClause, None
            limited, agg, targets = False, False, ()
        else:
            continue
        scope: dict[str, RelationUse] = {}
        local: set[str] = set()   # aliases of subqueries, functions and CTEs read at this level
        quals: list[Any] = []

        def add(item: Any) -> None:
            if isinstance(item, ast.RangeVar):
                if item.schemaname is None and item.relname in ctes:
                    local.add(item.alias.aliasname if item.alias is not None else item.relname)
                    return
                alias = item.alias.aliasname if item.alias is not None else item.relname
                scope[alias] = RelationUse(item.relname, item.schemaname, alias, limited=limited,
                                           aggregate=agg, only_relation=only)
            elif isinstance(item, ast.JoinExpr):
                add(item.larg)
                add(item.rarg)
                if item.quals is not None:
                    quals.extend(_and_terms(item.quals))
            elif getattr(item, "alias", None) is not None:   # RangeSubselect, RangeFunction
                local.add(item.alias.aliasname)

        for item in items:
            add(item)
        if not scope:
            continue

        def resolve(ref: Any) -> Any:
            """(use, column), "outer" (a column of an enclosing query) or None."""
            parts = _fields(ref)
            if parts is None:
                return None
            if len(parts) >= 2:
                if parts[-2] in local:
                    return None
                return (scope[parts[-2]], parts[-1]) if parts[-2] in scope else "outer"
            col = parts[0]
            if len(scope) == 1:
                return next(iter(scope.values())), col
            owners = [u for u in scope.values() if col in (columns or {}).get(u.table, ())]
            return (owners[0], col) if len(owners) == 1 else None

        def is_value(expr: Any) -> bool:
            stack = [expr]
            while stack:
                n = stack.pop()
                if isinstance(n, ast.SubLink):
                    continue  # a scalar subquery: computed apart from this level's rows
                if isinstance(n, ast.ColumnRef) and resolve(n) != "outer":
                    return False
                if isinstance(n, (list, tuple)):
                    stack.extend(n)
                elif isinstance(n, ast.Node):
                    stack.extend(v for v in (getattr(n, s, None) for s in n.__slots__)
                                 if isinstance(v, (ast.Node, list, tuple)))
            return True

        def column(expr: Any) -> tuple[RelationUse, str] | None:
            if not isinstance(expr, ast.ColumnRef):
                return None
            r = resolve(expr)
            return r if isinstance(r, tuple) else None

        for term in (_and_terms(where) if where is not None else []) + quals:
            if isinstance(term, ast.A_Expr):
                op = term.name[-1].sval if term.name else ""
                for col_side, other, flipped in ((term.lexpr, term.rexpr, False), (term.rexpr, term.lexpr, True)):
                    c = column(col_side)
                    if c is None or other is None or not is_value(other):
                        continue
                    use, name = c
                    if op == "=" and (term.kind == A_Expr_Kind.AEXPR_OP
                                      or (term.kind in (A_Expr_Kind.AEXPR_IN, A_Expr_Kind.AEXPR_OP_ANY) and not flipped)):
                        use.equality.append(name)
                    elif term.kind == A_Expr_Kind.AEXPR_OP and op in ("<", ">", "<=", ">="):
                        use.range.append(name)
                    elif term.kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_BETWEEN_SYM) and not flipped:
                        use.range.append(name)
                    break
            elif isinstance(term, ast.NullTest) and term.nulltesttype == NullTestType.IS_NULL:
                c = column(term.arg)
                if c:
                    c[0].equality.append(c[1])
            elif isinstance(term, ast.SubLink) and term.subLinkType == SubLinkType.ANY_SUBLINK:
                op = term.operName[-1].sval if term.operName else "="
                c = column(term.testexpr)
                if c and op == "=":
                    c[0].equality.append(c[1])
        if sort and not agg:
            output_names = {t.name for t in targets if getattr(t, "name", None)}
            order: list[tuple[str, bool]] = []
            owner = None
            for sb in sort:
                if not isinstance(sb.node, ast.ColumnRef):
                    break
                parts = _fields(sb.node)
                if parts is None or (len(parts) == 1 and parts[0] in output_names):
                    break
                c = column(sb.node)
                if c is None or (owner is not None and c[0] is not owner):
                    break
                owner = c[0]
                order.append((c[1], sb.sortby_dir == SortByDir.SORTBY_DESC))
            if owner is not None:
                owner.order_by = order
        for use in scope.values():
            use.equality = list(dict.fromkeys(use.equality))
            use.range = [c for c in dict.fromkeys(use.range) if c not in use.equality]
            if use.equality or use.range or use.order_by:
                out.append(use)
    return out


def _served_by(existing: Sequence[tuple[str, list[str]]], equality: Sequence[str],
               columns: Sequence[str]) -> str | None:
    """The name of an existing index that already serves these columns: it leads with all of
    them, or (with equality columns) with exactly the equality columns, or (without) with
    the first column."""
    cols = list(columns)
    for name, ix in existing:
        if ix[: len(cols)] == cols:
            return name
        if equality and len(ix) >= len(equality) and set(ix[: len(equality)]) == set(equality):
            return name
        if not equality and ix and cols and ix[0] == cols[0]:
            return name
    return None
