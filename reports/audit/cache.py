"""On-disk cache of finished experiment cells: one JSON file per cell, written atomically.

A *cell* is a pure function of a frozen, JSON-serialisable configuration and, for cells
that read a data set, of the rows actually loaded. Its cache key is the SHA-256 of the
canonical JSON of ``{kind, config, code_version, data_fingerprint}``, so a change of
configuration, of the computational code or of the data behind ``$MALLEABILITY_DATA``
gives a different key and the old entry is simply not found. Where a fingerprint names the
rows, the config is keyed without its ``data_root`` (:func:`computed_config`): the same rows
read through another spelling of the folder are the same cell. Every entry also stores the
kind, configuration, code version and data fingerprint it was computed for, and a
SHA-256 checksum of its own canonical content. On a hit the checksum is verified and the
stored fields are compared with the request; a file that is empty, truncated, not strict
JSON (``NaN`` tokens included), not a cell entry, edited, or copied from another cell is
**refused and logged** (once), never used, and overwritten by the recomputed entry.

Entries are strict JSON: a non-finite number in a result is stored as ``null`` and its
place is listed in the entry's ``non_finite`` field. A cache folder that cannot be
written (read-only, full disk) does not stop a run: :meth:`CellCache.put` keeps the entry
in memory, records what could not be stored (:attr:`CellCache.not_stored`) and logs one
line the first time.

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
import math
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from malleability import __version__
from malleability.errors import MalleabilityError

# Bump when a cell's stored form changes in a way the source hash cannot see.
# 3: entries carry a checksum and the data fingerprint.
CELL_PROTOCOL = 3

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
    """Sorted, compact, strict JSON (a non-finite number is bad input: it has no JSON form)."""
    try:
        return json.dumps(config_to_jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        where = ", ".join(non_finite_paths(value)) or "somewhere"
        raise MalleabilityError(f"a cell configuration holds a non-finite number ({where})") from None


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON token {name}")


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses the ``NaN`` / ``Infinity`` tokens Python would otherwise accept."""
    return json.loads(text, parse_constant=_reject_constant)


def non_finite_to_null(value: Any, path: str = "$") -> tuple[Any, list[str]]:
    """The value with every NaN/inf float replaced by None, and the places (``$.a[3]: nan``) where it was."""
    found: list[str] = []

    def walk(v, where):
        if isinstance(v, float) and not math.isfinite(v):
            found.append(f"{where}: {v}")
            return None
        if isinstance(v, dict):
            return {k: walk(x, f"{where}.{k}") for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x, f"{where}[{i}]") for i, x in enumerate(v)]
        return v

    return walk(value, path), found


def non_finite_paths(value: Any) -> list[str]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return non_finite_to_null(value)[1]


def entry_checksum(entry: dict) -> str:
    """SHA-256 of the canonical JSON of an entry without its ``checksum`` field."""
    body = {k: v for k, v in entry.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


def _source_files() -> list[tuple[str, Path]]:
    """(stable name, path) of every source file of :data:`RESULT_MODULES`.

    Found by their import specs, not by importing them: a dask worker hashes while its comm thread
    may be unpickling (importing) the next cell, and two threads importing one package cycle can
    hand each other a partially initialised module."""
    import importlib.util

    out = []
    for name in RESULT_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ImportError(f"cannot find the source of {name}")
        path = Path(spec.origin).resolve()
        if spec.submodule_search_locations is not None:
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


def computed_config(config: Any) -> Any:
    """The config without where its data was read from (``data_root``: a data set's config holds it, k-layer's,
    which reads several, at the top): the same rows under another spelling of a folder are the same cell."""
    out = config_to_jsonable(config)
    if isinstance(out, dict):
        out = {k: v for k, v in out.items() if k != "data_root"}
        if isinstance(out.get("data"), dict):
            out["data"] = {k: v for k, v in out["data"].items() if k != "data_root"}
    return out


def cell_key(kind: str, config: Any, code: dict | None = None, data: str | None = None, *,
             legacy: bool = False) -> str:
    """The cache key of one cell: 24 hex digits of SHA-256 over kind, config, code version and,
    for a cell that reads a data set, the fingerprint ``data`` of the rows it reads.

    With a fingerprint, the data root is left out of the config (:func:`computed_config`): the
    fingerprint names the rows, wherever they were read from. ``legacy``: the key of documents
    written before that, which hashed the root too (still accepted when a results document is read)."""
    code = code_version() if code is None else code
    keyed = config if legacy or data is None else computed_config(config)
    fields = {"kind": kind, "config": keyed, "code_version": code}
    if data is not None:
        fields["data_fingerprint"] = data
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:24]


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically: temp file in the same folder, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Strict JSON: a NaN here is a bug upstream (callers map non-finite numbers to null first).
    text = json.dumps(value, indent=1, sort_keys=True, default=_json_default, allow_nan=False)
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
    """The cache folder. ``log`` receives one line per refused entry and one if entries cannot be stored."""

    def __init__(self, root: str | os.PathLike, *, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.refusals: list[str] = []
        self.unwritable: str | None = None  # why entries cannot be stored, once known
        self.not_stored: list[dict] = []  # {kind, key} of every entry computed but not stored
        self._log = log

    def _say(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def _refuse(self, message: str) -> None:
        self.refusals.append(message)
        self._say(f"warning: {message}")

    def _mark_unwritable(self, exc: OSError) -> None:
        if self.unwritable is None:
            self.unwritable = f"{self.root}: {os.strerror(exc.errno) if exc.errno else exc}"
            self._say(f"warning: cache: cannot store entries in {self.unwritable}; running on, "
                      "finished cells are kept in results.json only")

    def check_writable(self) -> str | None:
        """Try to store a probe entry; None when the folder takes writes, else why not (also logged)."""
        try:
            probe = self.root / ".write-probe.json"
            atomic_write_json(probe, {"probe": True})
            probe.unlink()
        except OSError as exc:
            self._mark_unwritable(exc)
        return self.unwritable

    def path_for(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def get(self, kind: str, config: Any, code: dict | None = None, data: str | None = None) -> dict | None:
        """The stored entry for this cell, or None (missing, or refused as damaged or foreign)."""
        code = code_version() if code is None else code
        key = cell_key(kind, config, code, data)
        path = self.path_for(kind, key)
        if not path.exists():
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._refuse(f"cache: refused {path} (unreadable: {getattr(exc, 'strerror', None) or 'not UTF-8'}); "
                         "recomputing")
            return None
        if not text.strip():
            self._refuse(f"cache: refused {path} (empty file); recomputing")
            return None
        try:
            entry = strict_loads(text)
        except ValueError as exc:
            self._refuse(f"cache: refused {path} (unreadable: not strict JSON, {str(exc).split(':')[0]}); "
                         "recomputing")
            return None
        if not isinstance(entry, dict) or "result" not in entry:
            self._refuse(f"cache: refused {path} (not a cell entry); recomputing")
            return None
        if entry.get("checksum") != entry_checksum(entry):
            self._refuse(f"cache: refused {path} (checksum does not match its content: damaged or edited); "
                         "recomputing")
            return None
        problems = []
        if entry.get("kind") != kind:
            problems.append(f"kind {entry.get('kind')!r} != {kind!r}")
        same = (entry.get("config") == config_to_jsonable(config) if data is None
                else computed_config(entry.get("config")) == computed_config(config))
        if not same:
            problems.append("stored configuration differs from the requested one")
        if entry.get("code_version") != config_to_jsonable(code):
            problems.append("written by another code version")
        if entry.get("data_fingerprint") != data:
            problems.append("computed from other data")
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
        data: str | None = None,
    ) -> dict:
        """Store a finished cell atomically and return the entry (also when the folder takes no writes)."""
        code = code_version() if code is None else code
        key = cell_key(kind, config, code, data)
        result, non_finite = non_finite_to_null(config_to_jsonable_lenient(result), "result")
        provenance, _ = non_finite_to_null(config_to_jsonable_lenient(provenance), "provenance")
        entry = {
            "key": key,
            "kind": kind,
            "config": config_to_jsonable(config),
            "code_version": config_to_jsonable(code),
            "data_fingerprint": data,
            "result": result,
            "non_finite": non_finite,
            "wall_time_s": float(wall_time_s),
            "provenance": provenance,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        entry["checksum"] = entry_checksum(entry)
        if self.unwritable is None:
            try:
                atomic_write_json(self.path_for(kind, key), entry)
            except OSError as exc:
                self._mark_unwritable(exc)
        if self.unwritable is not None:
            self.not_stored.append({"kind": kind, "key": key})
        return entry

    def unwritable_report(self) -> dict | None:
        """What results.json says about entries that could not be stored (None: every entry was stored)."""
        if self.unwritable is None:
            return None
        return {"reason": self.unwritable, "not_stored": list(self.not_stored)}

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
                    entry = strict_loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError, UnicodeDecodeError):
                    continue
                if isinstance(entry, dict) and entry.get("code_version") != code:
                    foreign += 1
        return foreign


def config_to_jsonable_lenient(value: Any) -> Any:
    """Like :func:`config_to_jsonable` but keeps NaN/inf as floats, so that they can be mapped to null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, sort_keys=True, default=_json_default, allow_nan=True))
