"""Loading a params file: YAML read safely (no duplicate keys, bounded depth and size),
validated into :class:`~perfbook.params.Params`, errors as one line, inline secrets
refused, ``--set`` overrides, environment values and relative paths; and the resolved
params a batch run's notebooks load (:func:`dump_resolved`, :func:`load_resolved`).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .settings import Params
from .values import ParamsError, _short

# --------------------------------------------------------------------------- loading

_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|api_key|apikey|dsn)$", re.I)


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: dict, example: str = "params/production.example.yaml") -> str:
    kind, msg = err.get("type", ""), err.get("msg", "")
    if kind == "extra_forbidden":
        return f"unknown key (check spelling; see {example})"
    if kind == "missing":
        return "required field is missing"
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    got = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{msg} (got {type(got).__name__}: {str(got)[:60]!r})"
    return msg


def _inline_secret(data: Any, path: str = "") -> tuple[str, str] | None:
    """Find a key that holds a secret value inline (password:, token:, dsn:, ...)."""
    if isinstance(data, dict):
        for k, v in data.items():
            p = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and _SECRET_KEYS.search(k) and isinstance(v, str) and v:
                return p, "a secret value written inline; name the environment variable that holds it instead (e.g. bearer_token_env: FLY_API_TOKEN)"
            if (hit := _inline_secret(v, p)):
                return hit
    elif isinstance(data, list):
        for i, v in enumerate(data):
            if (hit := _inline_secret(v, f"{path}[{i}]")):
                return hit
    return None


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file. Raises :class:`ParamsError` (one line)."""
    path = Path(path)
    data = read_yaml(path)
    for key in overrides or {}:
        _set_dotted(data, key, overrides[key])
    if (hit := _bad_structure(data)):
        raise ParamsError(path, *hit)
    if (hit := _inline_secret(data)):
        raise ParamsError(path, *hit)
    params = _validated(path, data)
    _resolve_paths(params, path.resolve().parent)
    return params


def load_model(path: str | Path, model: type[Any], example: str) -> Any:
    """Read a YAML file as :func:`load` reads a params file (safe, bounded, inline secrets
    refused) into another pydantic ``model`` (``perfbook listen --config``); the first
    problem as a one-line :class:`ParamsError` naming the file and the field."""
    path = Path(path)
    data = read_yaml(path)
    if (hit := _bad_structure(data)) or (hit := _inline_secret(data)):
        raise ParamsError(path, *hit)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ParamsError(path, _field_path(err["loc"]), _message(err, example)) from None


def read_yaml(path: Path) -> dict:
    """The mapping a YAML file holds; :class:`ParamsError` (one line) for anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(path, "(file)", "no such file") from None
    except IsADirectoryError:
        raise ParamsError(path, "(file)", "is a directory, not a params file") from None
    except UnicodeDecodeError as e:
        raise ParamsError(path, "(file)", f"not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ParamsError(path, "(file)", e.strerror or str(e)) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except RecursionError:
        raise ParamsError(path, "(top level)", "YAML nested too deeply") from None
    except _DuplicateKey as e:
        mark = e.problem_mark
        raise ParamsError(path, f"line {mark.line + 1}, column {mark.column + 1}", e.problem) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["unreadable"])[0]
        context = getattr(e, "context", None)
        if context and problem.startswith("but "):  # "expected a single document..., but found another"
            problem = f"{context}, {problem}"
        raise ParamsError(path, where, f"YAML syntax error: {problem}") from None
    if data is None:
        raise ParamsError(path, "(top level)", "the file is empty")
    if not isinstance(data, dict):
        raise ParamsError(path, "(top level)", f"expected a mapping of keys, got {type(data).__name__}")
    return data


def _validated(path: Path, data: Any) -> Params:
    """``data`` validated into :class:`Params`; the first problem as a :class:`ParamsError`."""
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ParamsError(path, _field_path(err["loc"]), _message(err)) from None
    except RecursionError:  # pragma: no cover - _bad_structure bounds the depth first
        raise ParamsError(path, "(top level)", "nested too deeply") from None


def dump_resolved(params: Params, path: Path) -> Path:
    """Write ``params`` as validated (overrides applied, file paths made absolute by
    :func:`load`) to ``path``, as JSON :func:`load_resolved` turns back into equal params.

    The runner writes it once into its private work folder and every notebook of the batch
    loads it, so the params file is validated once and ``-P`` overrides applied once.
    Secrets stay names of environment variables: :class:`Params` holds no value read from
    the environment. Field aliases (an alert rule's ``for``) are written as in a params file.
    """
    path.write_text(json.dumps(params.model_dump(mode="json", by_alias=True), indent=1), encoding="utf-8")
    return path


def load_resolved(path: str | Path) -> Params:
    """The params :func:`dump_resolved` wrote, exactly: no overrides, and no path resolved
    again (against the work folder the file lies in). Raises :class:`ParamsError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ParamsError(path, "(file)", e.strerror or str(e)) from None
    except ValueError as e:  # not UTF-8 or not JSON: not a file dump_resolved wrote
        raise ParamsError(path, "(file)", f"not resolved params: {e}") from None
    return _validated(path, data)


def _resolve_paths(params: Params, base: Path) -> None:
    """File paths in a params file are relative to the file, wherever perfbook runs from."""
    t = params.targets

    def absolute(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    for name in ("fly_toml", "cpu_profile"):
        if getattr(t, name, None):
            setattr(t, name, absolute(getattr(t, name)))
    for name in ("postgres_logs", "app_logs", "heap_snapshots"):
        if getattr(t, name, None):
            setattr(t, name, [absolute(p) for p in getattr(t, name)])


_MAX_DEPTH = 40
_MAX_VALUES = 200_000
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class _Bad(Exception):
    pass


def _bad_structure(data: Any) -> tuple[str, str] | None:
    """What YAML can build but no params file means: a cycle (an alias inside itself), nesting
    deeper than any field, a document that explodes through aliases ("billion laughs"), text
    with a lone surrogate (``"\\ud800"``, which no file or page can hold). Checked before
    validation so that none of them turns into a traceback or a hang."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def walk(node: Any, where: str, depth: int) -> int:
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise _Bad(where or "(top level)", "contains a lone surrogate (an invalid character, e.g. \\ud800)")
            return 1
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in on_path:
            raise _Bad(where or "(top level)", "a YAML alias refers to a node that contains it (a cycle)")
        if key in sizes:
            return sizes[key]
        if depth > _MAX_DEPTH:
            raise _Bad(where or "(top level)", f"nested too deeply (more than {_MAX_DEPTH} levels)")
        on_path.add(key)
        total = 1
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            if isinstance(k, str) and _SURROGATE.search(k):
                raise _Bad(where or "(top level)", "a key contains a lone surrogate (an invalid character)")
            child = (f"{where}[{k}]" if isinstance(node, list) else (f"{where}.{k}" if where else str(k)))
            total += walk(v, child, depth + 1)
            if total > _MAX_VALUES:
                raise _Bad(where or "(top level)", f"too large: more than {_MAX_VALUES:,} values "
                                                   f"(after expanding YAML aliases)")
        on_path.discard(key)
        sizes[key] = total
        return total

    try:
        walk(data, "", 0)
    except _Bad as bad:
        return bad.args[0], bad.args[1]
    return None


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error: YAML
    keeps the last silently, so a second ``targets:`` block would drop the first unnoticed."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class says so
                    continue
                if first is not None:
                    raise _DuplicateKey(None, None, f"duplicate key {_short(key)} (first on line {first + 1}); "
                                        f"YAML would keep only the last", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ParamsError("-P", dotted, f"{p} is not a mapping")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``-P key.path=value`` with the value parsed as YAML (numbers, lists, ...)."""
    if "=" not in text:
        raise ParamsError("-P", text, "expected key.path=value")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def env_value(name: str | None) -> str | None:
    """The value of an environment variable the params name (None if unset/empty)."""
    if not name:
        return None
    return os.environ.get(name) or None


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
