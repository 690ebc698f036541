"""What a patch is, and what applying one reports.

A patch is plain data: the module(s) it targets, the function, the AF3
versions whose stock code it was written against, and the exact rewrites it
makes.  Applying it is :func:`apply_source_patch`; the bookkeeping of what is
applied where lives in :mod:`af3_cpu_patch.hooks`.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import types

from af3_cpu_patch import source_rewrite
from af3_cpu_patch.source_rewrite import Rewrite


class Status(str, enum.Enum):
    APPLIED = "applied"
    UPSTREAM = "already fixed upstream"
    NOT_NEEDED = "not needed for this AF3 version"
    NOT_FOUND = "target not found"
    MISMATCH = "source did not match"
    PENDING = "waiting for import"
    REMOVED = "removed"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    try:
        return tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class SourcePatch:
    """Rewrite a few expressions of one AF3 function at import time.

    ``modules`` lists alternative module paths (AF3 moved files between
    versions); the first that is imported is patched.  ``versions`` is the
    inclusive range of AF3 releases whose stock code has the ``stock`` forms;
    it only decides how a non-matching target is reported ("not needed" inside
    a known newer version, "source did not match" otherwise) -- whether a patch
    is applied is always decided by the source itself.
    """

    name: str
    why: str
    modules: tuple[str, ...]
    function: str
    rewrites: tuple[Rewrite, ...]
    versions: tuple[str, str]
    fixed_upstream_in: str | None = None
    requires_globals: tuple[tuple[str, str], ...] = (("jnp", "jax.numpy"),)
    verified_by: str = "exact AST match of every stock expression before anything is changed"

    def covers(self, version: str | None) -> bool | None:
        """Is ``version`` in the range this patch was written for (None: unknown)?"""
        v = version_tuple(version)
        if v is None:
            return None
        return version_tuple(self.versions[0]) <= v <= version_tuple(self.versions[1])


@dataclasses.dataclass
class Outcome:
    """The result of trying one patch on one loaded module."""

    status: Status
    detail: str = ""
    function: types.FunctionType | None = None
    original_code: types.CodeType | None = None
    patched_code: types.CodeType | None = None


def apply_source_patch(patch: SourcePatch, module: types.ModuleType, af3_version: str | None) -> Outcome:
    """Verify the target, then swap in rewritten code.  Never raises."""
    try:
        for name, expected in patch.requires_globals:
            if module.__dict__.get(name) is not importlib.import_module(expected):
                return Outcome(Status.MISMATCH, f"module global {name!r} is not {expected}")
        located = source_rewrite.locate(module, patch.function)
        kind = source_rewrite.classify(located.scope_node, patch.rewrites)
        if kind == "fixed":
            return Outcome(Status.UPSTREAM, f"the guarded form is already in {patch.function}")
        if kind == "mismatch":
            if patch.covers(af3_version) is False:
                return Outcome(Status.NOT_NEEDED, f"AF3 {af3_version} has no stock form of this site")
            return Outcome(Status.MISMATCH, source_rewrite.describe_mismatch(located.scope_node, patch.rewrites))
        code = source_rewrite.build_code(located, patch.rewrites)
        original = located.host.__code__
        located.host.__code__ = code
        return Outcome(Status.APPLIED, "", located.host, original, code)
    except source_rewrite.TargetNotFound as exc:
        return Outcome(Status.NOT_FOUND, str(exc))
    except source_rewrite.SourceMismatch as exc:
        return Outcome(Status.MISMATCH, str(exc))
    except Exception as exc:  # a post-import hook must never break AF3's import
        return Outcome(Status.ERROR, f"{type(exc).__name__}: {exc}")
