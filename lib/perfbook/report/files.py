"""The run folder on disk: dated folders made with ``mkdir`` (never reused), files written
to a temporary name and linked into place (never half a file, never overwritten), each
checked for secrets first; and the versions a run records.
"""
from __future__ import annotations

import errno
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from .redaction import (
    Redactor,
    SecretLeak,
)

# --------------------------------------------------------------------------- folders and writes

_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


def slug(text: str, limit: int = 60) -> str:
    s = _SLUG.sub("-", text).strip("-")[:limit]
    return s or "run"


def make_run_dir(root: str | Path, label: str, now: datetime | None = None) -> Path:
    """Create ``root/YYYY-MM-DD/HHMMSS-label`` (or ``-2``, ``-3``, ...): never an existing one."""
    now = now or datetime.now(timezone.utc).astimezone()
    day = Path(root) / now.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    base = f"{now.strftime('%H%M%S')}-{slug(label)}"
    for n in range(1, 1000):
        candidate = day / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {day}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _verified(path: Path, data: str | bytes, verify: Redactor | None) -> bytes:
    """The bytes to write; :class:`SecretLeak` if ``verify`` finds a secret in them.

    Writers never redact (redaction works on structure, before serialisation: see
    :class:`Redactor`); they refuse a file that still holds a secret.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if verify is not None:
        what = verify.leak(data if isinstance(data, str) else data.decode("utf-8", "replace"))
        if what:
            raise SecretLeak(f"refusing to write {path.name}: it still contains {what}")
    return raw


@contextmanager
def _temp_beside(path: Path, raw: bytes) -> Iterator[str]:
    """A temp file holding ``raw`` (fsynced, report mode) in ``path``'s folder, for the caller to
    move into place; removed afterwards if it is still there (the move failed)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; reports are for sharing (umask still applies)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        yield tmp
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_new(path: str | Path, data: str | bytes, verify: Redactor | None = None) -> Path:
    """Write a file atomically that must not exist yet (link a temp file into place)."""
    path = Path(path)
    with _temp_beside(path, _verified(path, data, verify)) as tmp:
        try:
            os.link(tmp, path)  # fails with FileExistsError: nothing is overwritten
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # A filesystem without hard links (some FUSE and network mounts): claim the name
            # with O_EXCL (still never overwriting), then move the whole file onto our claim.
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE))
            os.replace(tmp, path)
    return path


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EACCES}


def replace_file(path: str | Path, data: str, verify: Redactor | None = None) -> Path:
    """Atomically replace one of *this run's own* status files (manifest while running)."""
    path = Path(path)
    with _temp_beside(path, _verified(path, data, verify)) as tmp:
        os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- versions


@lru_cache(maxsize=1)
def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=10"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("perfbook", "papermill", "nbclient", "nbconvert", "jupyter_client", "ipykernel",
                "pandas", "matplotlib", "psycopg", "prometheus_client", "pglast", "locust", "pydantic"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    out["git"] = git_revision()
    return out
