"""Read AF3's chemical components dictionary one component at a time.

Why: AF3 unpickles its whole CCD (about 51,000 components, a 520 MB file) into
Python objects in every run: about 6.5 s, and 3.7 GB of the 6-7 GB peak
memory of a small prediction, plus seconds more to free it at exit.  A run
reads a few dozen components (the input's residues and ligands), always with
``Ccd.get``.

So the pickle is converted once into an index next to the compilation cache
(``$XDG_CACHE_HOME/af3-cpu/ccd``, about the pickle's size): an SQLite file
with one pickled entry per component, named after the pickle's path, size and
modification time, so a rebuilt CCD gets a new index.  The conversion runs in
a child process, so no af3-cpu process ever holds the whole dictionary.  AF3
then gets a mapping that reads a component on first use and keeps it: same
keys in the same order, equal values, and a user CCD's ``update`` lands in an
overlay, as it would in AF3's dict.  If the index cannot be built (read-only
or full disk) AF3 loads its pickle as it always does.
"""

from __future__ import annotations

import fcntl
import io
import os
import pathlib
import pickle
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

from af3_cpu_patch.engine.patch import Numerics, SourcePatch, WrapperPatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.host import cache_dirs
from af3_cpu_patch.patches.targets import (
    CHEMICAL_COMPONENTS,
)

_SCHEMA = "CREATE TABLE components (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
# The types AF3's own safe_pickle allows in its CCD pickle.
_ALLOWED_BUILTINS = frozenset(
    {"NoneType", "bool", "bytes", "dict", "float", "frozenset", "int", "list", "set", "str", "tuple"}
)


class _BuiltinsOnly(pickle.Unpickler):
    """Unpickle plain data only, as AF3's safe_pickle does for the CCD."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _ALLOWED_BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"disallowed {module}.{name} in CCD data")


def _loads(blob: bytes) -> Any:
    return _BuiltinsOnly(io.BytesIO(blob)).load()


def build(pickle_path: pathlib.Path, dest: pathlib.Path) -> None:
    """Convert the CCD pickle into an index at ``dest`` (atomically; removes older indexes of it)."""
    with open(pickle_path, "rb") as f:
        ccd = _BuiltinsOnly(f).load()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        with sqlite3.connect(partial) as db:
            db.execute(_SCHEMA)
            db.executemany(
                "INSERT INTO components VALUES (?, ?)",
                ((key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) for key, value in ccd.items()),
            )
        db.close()
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    prefix = dest.name.split("-", 1)[0] + "-"
    for old in dest.parent.glob(prefix + "*.sqlite"):
        if old != dest:
            old.unlink(missing_ok=True)


def ensure_index(pickle_path: os.PathLike[str] | str) -> pathlib.Path:
    """The index of ``pickle_path``, built in a child process if there is none yet.

    A lock file makes processes that start together (batch workers) wait for
    one build instead of each unpickling the whole CCD at once.
    """
    dest = cache_dirs.ccd_index_path(pickle_path)
    if dest.is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = open(dest.parent / ".build.lock", "w")
    except OSError as exc:
        raise OSError(f"could not index the CCD into {dest.parent}: {exc.strerror or exc}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.is_file():
            proc = subprocess.run(
                [sys.executable, "-m", __name__, str(pickle_path), str(dest)], capture_output=True, text=True
            )
            if proc.returncode != 0 or not dest.is_file():
                lines = (proc.stderr or proc.stdout or "no output").strip().splitlines()
                raise OSError(f"could not index the CCD into {dest.parent}: {lines[-1] if lines else 'no output'}")
    return dest


class LazyCcd(MutableMapping):
    """AF3's CCD dict, read from the index a component at a time (thread- and fork-safe)."""

    def __init__(self, index: pathlib.Path):
        self._index = index
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = -1
        self._loaded: dict[str, Any] = {}  # components read so far, and any a user CCD added
        self._absent: set[str] = set()
        self._deleted: set[str] = set()

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._db is None or self._pid != os.getpid():  # a forked child opens its own connection
                uri = f"{self._index.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
                self._pid = os.getpid()
            return self._db.execute(sql, args).fetchall()

    def _stored_keys(self) -> list[str]:
        return [key for (key,) in self._query("SELECT key FROM components ORDER BY rowid")]

    def __getitem__(self, key: str) -> Any:
        if key in self._loaded:
            return self._loaded[key]
        if key in self._absent or key in self._deleted or not isinstance(key, str):
            raise KeyError(key)
        rows = self._query("SELECT value FROM components WHERE key = ?", (key,))
        if not rows:
            self._absent.add(key)
            raise KeyError(key)
        return self._loaded.setdefault(key, _loads(rows[0][0]))

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __setitem__(self, key: str, value: Any) -> None:
        self._loaded[key] = value
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        self[key]  # KeyError if absent
        del self._loaded[key]
        self._deleted.add(key)

    def __iter__(self) -> Iterator[str]:
        stored = self._stored_keys()
        known = set(stored)
        yield from (key for key in stored if key not in self._deleted)
        yield from (key for key in list(self._loaded) if key not in known)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __reduce__(self):
        return (_rebuild, (self._index, dict(self._loaded), set(self._deleted)))


def _rebuild(index: pathlib.Path, loaded: dict, deleted: set) -> LazyCcd:
    ccd = LazyCcd(index)
    ccd._loaded.update(loaded)
    ccd._deleted.update(deleted)
    return ccd


def open_ccd(pickle_path: os.PathLike[str] | str) -> LazyCcd:
    """A new lazy CCD for ``pickle_path`` (raises ``OSError`` if it cannot be indexed)."""
    return LazyCcd(ensure_index(pickle_path))


_shared: dict[str, LazyCcd] = {}
_noted: list[str] = []


def _note_fallback(exc: OSError) -> None:
    if not _noted:
        _noted.append(str(exc))
        print(f"af3-cpu: note: {exc}; AF3 loads its whole CCD instead.", file=sys.stderr)


def load_cached_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for v3.0.2+ ``chemical_components._load_ccd_pickle_cached(path)``.

    AF3 caches one dict per path (and a user CCD updates that shared dict);
    likewise one lazy CCD per path here.
    """
    path = kwargs["path"] if "path" in kwargs else args[0]
    key = os.fspath(path)
    if key not in _shared:
        try:
            _shared[key] = open_ccd(path)
        except OSError as exc:
            _note_fallback(exc)
            return wrapped(*args, **kwargs)
    return _shared[key]


def load_fresh(f) -> Any:
    """v3.0.0/1 ``Ccd.__init__`` unpickles the open file ``f`` on every call: a new lazy CCD instead."""
    try:
        return open_ccd(f.name)
    except OSError as exc:
        _note_fallback(exc)
        return pickle.loads(f.read())


if __name__ == "__main__":  # the child process of ensure_index
    build(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))


_LAZY_CCD_WHY = (
    "AF3 unpickles its whole chemical components dictionary in every run (about 6 s and 3.7 GB) to read a few "
    "dozen components; read them one at a time from an index built once in the user's cache."
)


LAZY_CCD = WrapperPatch(
    name="lazy-ccd",
    why=_LAZY_CCD_WHY,
    modules=CHEMICAL_COMPONENTS,
    function="_load_ccd_pickle_cached",
    versions=("3.0.2", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    parameters=("path",),
    wrapper=load_cached_wrapper,
)


LAZY_CCD_FRESH = SourcePatch(
    name="lazy-ccd-per-instance",
    why=_LAZY_CCD_WHY + " (v3.0.0/1 unpickle it again for every Ccd object.)",
    modules=CHEMICAL_COMPONENTS,
    function="Ccd.__init__",
    rewrites=(
        Rewrite(
            "pickle.loads(f.read())",
            "__import__('af3_cpu_patch.patches.lazy_ccd', fromlist=['load_fresh']).load_fresh(f)",
        ),
    ),
    versions=("3.0.0", "3.0.1"),
    numerics=Numerics.IDENTICAL,
    requires_globals=(("pickle", "pickle"),),
)


PATCHES = (LAZY_CCD, LAZY_CCD_FRESH)
