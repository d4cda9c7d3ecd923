"""On-disk cache of finished experiment cells: one JSON file per cell, written atomically.

A *cell* is a pure function of a frozen, JSON-serialisable configuration. Its cache key
is the SHA-256 of the canonical JSON of ``{kind, config, code_version}``, so a change of
configuration or of the computational code gives a different key and the old entry is
simply not found. Every entry also stores the kind, configuration and code version it
was computed for; on a hit these are compared with the request and a mismatch (a file
copied from another cache, edited by hand, or a hash collision) is **refused and
logged**, never used. A file that is not valid JSON (a torn write from an old tool, a
disk error) is refused the same way and later overwritten.

Layout: ``CACHE_DIR/<kind>/<key>.json``. Writes go to a temporary file in the same folder,
are flushed and fsync'ed, then moved into place with :func:`os.replace` (atomic on POSIX),
so a run killed at any instant (Ctrl-C, ``kill -9``, power loss after the fsync) leaves
either the complete old state or the complete new entry, never half a file.

The code version (:func:`code_version`) is the package version plus a hash of the source
of the modules listed in :data:`RESULT_MODULES` (everything that computes a cell's result,
including the audit's cell wrappers) and :data:`CELL_PROTOCOL`. Summaries, verdicts and
report rendering are deliberately *not* part of it: re-summarising or re-rendering never
invalidates finished experiments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from malleability import __version__

# Bump when a cell's stored form changes in a way the source hash cannot see.
CELL_PROTOCOL = 2

# The modules and packages (every .py file below a package) whose source defines a cell's result.
RESULT_MODULES = (
    "malleability.errors",
    "malleability.validation",
    "malleability.theory",
    "malleability.properties",
    "malleability.empirics",
    "malleability.reports.audit.cells",
)


def config_to_jsonable(config: Any) -> Any:
    """A frozen dataclass (possibly nested) or plain JSON value -> canonical JSON-ready value."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    # Round-trip through JSON: tuples become lists, keys become strings, so that a stored
    # config and a requested one compare equal exactly when they serialise equal.
    return json.loads(json.dumps(config, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def canonical_json(value: Any) -> str:
    return json.dumps(config_to_jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


def _source_files() -> list[tuple[str, Path]]:
    """(stable name, path) of every source file of :data:`RESULT_MODULES`."""
    import importlib

    out = []
    for name in RESULT_MODULES:
        module = importlib.import_module(name)
        path = Path(module.__file__).resolve()
        if path.name == "__init__.py":
            root = path.parent
            out += [(f"{name}/{p.relative_to(root).as_posix()}", p) for p in sorted(root.rglob("*.py"))
                    if "__pycache__" not in p.parts]
        else:
            out.append((name, path))
    return out


def source_hash() -> str:
    """SHA-256 over the (name, bytes) of every source file of :data:`RESULT_MODULES`.

    Recomputed on every call (a few milliseconds): a long-lived process must see edits.
    Callers compute :func:`code_version` once per run and pass it down."""
    digest = hashlib.sha256()
    for name, path in _source_files():
        digest.update(f"{name}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def code_version() -> dict:
    """What must match for a cached result to be reused: package version, source hash, cell protocol."""
    return {"package": __version__, "source_sha256": source_hash(), "cell_protocol": CELL_PROTOCOL}


def cell_key(kind: str, config: Any, code: dict | None = None) -> str:
    """The cache key of one cell: 24 hex digits of SHA-256 over kind, config and code version."""
    code = code_version() if code is None else code
    payload = canonical_json({"kind": kind, "config": config, "code_version": code})
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically: temp file in the same folder, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, indent=1, sort_keys=True, default=_json_default, allow_nan=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; the result is an ordinary file
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


class CellCache:
    """The cache folder. ``log`` receives one line per refused entry (default: silent list)."""

    def __init__(self, root: str | os.PathLike, *, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.refusals: list[str] = []
        self._log = log

    def _refuse(self, message: str) -> None:
        self.refusals.append(message)
        if self._log is not None:
            self._log(message)

    def path_for(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def get(self, kind: str, config: Any, code: dict | None = None) -> dict | None:
        """The stored entry for this cell, or None (missing, corrupt, or refused as foreign)."""
        code = code_version() if code is None else code
        key = cell_key(kind, config, code)
        path = self.path_for(kind, key)
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self._refuse(f"cache: refused {path} (unreadable: {type(exc).__name__}); recomputing")
            return None
        if not isinstance(entry, dict) or "result" not in entry:
            self._refuse(f"cache: refused {path} (not a cell entry); recomputing")
            return None
        problems = []
        if entry.get("kind") != kind:
            problems.append(f"kind {entry.get('kind')!r} != {kind!r}")
        if entry.get("config") != config_to_jsonable(config):
            problems.append("stored configuration differs from the requested one")
        if entry.get("code_version") != config_to_jsonable(code):
            problems.append("written by another code version")
        if entry.get("key") != key:
            problems.append("stored key differs")
        if problems:
            self._refuse(f"cache: refused {path} ({'; '.join(problems)}); recomputing")
            return None
        return entry

    def put(
        self,
        kind: str,
        config: Any,
        result: Any,
        *,
        wall_time_s: float,
        provenance: dict | None = None,
        code: dict | None = None,
    ) -> dict:
        """Store a finished cell atomically and return the entry written."""
        code = code_version() if code is None else code
        key = cell_key(kind, config, code)
        entry = {
            "key": key,
            "kind": kind,
            "config": config_to_jsonable(config),
            "code_version": config_to_jsonable(code),
            "result": config_to_jsonable(result),
            "wall_time_s": float(wall_time_s),
            "provenance": provenance,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(self.path_for(kind, key), entry)
        return entry

    def count_foreign(self, kinds: list[str], code: dict | None = None) -> int:
        """How many entries of these kinds were written by another code version (they are ignored)."""
        code = config_to_jsonable(code_version() if code is None else code)
        foreign = 0
        for kind in kinds:
            folder = self.root / kind
            if not folder.is_dir():
                continue
            for path in folder.glob("*.json"):
                try:
                    entry = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError, UnicodeDecodeError):
                    continue
                if isinstance(entry, dict) and entry.get("code_version") != code:
                    foreign += 1
        return foreign
