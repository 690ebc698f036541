"""What a patch is, and what applying one reports.

A patch is plain data: the module(s) it targets, the function, the AF3
versions whose stock code it was written against, and how it is applied
(source rewrites, a ``wrapt`` wrapper, an import fallback).  ``Patch.apply``
verifies the target and returns an :class:`Outcome` that can undo itself;
the bookkeeping of what is applied where lives in :mod:`af3_cpu_patch.engine.hooks`.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import types
import weakref
from typing import Any, Callable

import wrapt

from af3_cpu_patch.engine import source_rewrite
from af3_cpu_patch.engine.source_rewrite import Rewrite


class Status(str, enum.Enum):
    APPLIED = "applied"
    PARTIAL = "applied in part"  # some optional rewrites are not in this version's source
    UPSTREAM = "already fixed upstream"
    NOT_NEEDED = "not needed"
    NOT_FOUND = "target not found"
    MISMATCH = "source did not match"
    PENDING = "waiting for import"
    REMOVED = "removed"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    @property
    def in_effect(self) -> bool:
        """Is the patch (or part of it) what AF3 runs?"""
        return self in (Status.APPLIED, Status.PARTIAL)


class Numerics(str, enum.Enum):
    """What a patch does to AF3's numbers on the same CPU, compared with stock AF3.

    ``af3-cpu predict --exact`` installs only ``NEEDED`` and ``IDENTICAL``
    patches; ``CHANGES`` patches state their measured difference.
    """

    NEEDED = "needed on a CPU"  # to start, or to be finite where stock gives NaN; otherwise stock's bits
    IDENTICAL = "bit-identical"
    CHANGES = "changes numbers"

    def __str__(self) -> str:
        return self.value


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    try:
        return tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return None


@dataclasses.dataclass
class Outcome:
    """The result of trying one patch on one loaded module.

    ``undo`` restores what was there; ``in_place`` tells whether the patch is
    still what AF3 runs (so a second apply is a no-op).
    """

    status: Status
    detail: str = ""
    undo: Callable[[], None] | None = None
    in_place: Callable[[], bool] = lambda: False


@dataclasses.dataclass(frozen=True)
class Patch:
    """Fields every patch has; subclasses say how it is applied."""

    name: str
    why: str
    modules: tuple[str, ...]
    function: str
    versions: tuple[str, str]
    numerics: Numerics
    # For CHANGES: the measured difference from stock (what, how much, where measured).
    difference: str = ""

    def covers(self, version: str | None) -> bool | None:
        """Is ``version`` in the range this patch was written for (None: unknown)?"""
        v = version_tuple(version)
        if v is None:
            return None
        return version_tuple(self.versions[0]) <= v <= version_tuple(self.versions[1])

    def arm(self, record: Callable[[str, Outcome], None]) -> None:
        """Called by ``install()`` before any target is imported (most patches need nothing)."""

    def disarm(self) -> None:
        """Called by ``uninstall()``."""

    def apply(self, module: types.ModuleType, af3_version: str | None) -> Outcome:
        """Verify the target in ``module`` and patch it.  Never raises."""
        try:
            return self._apply(module, af3_version)
        except source_rewrite.TargetNotFound as exc:
            return Outcome(Status.NOT_FOUND, str(exc))
        except source_rewrite.SourceMismatch as exc:
            return Outcome(Status.MISMATCH, str(exc))
        except Exception as exc:  # a post-import hook must never break AF3's import
            return Outcome(Status.ERROR, f"{type(exc).__name__}: {exc}")

    def _apply(self, module: types.ModuleType, af3_version: str | None) -> Outcome:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class SourcePatch(Patch):
    """Rewrite a few expressions of one AF3 function at import time.

    ``modules`` lists alternative module paths (AF3 moved files between
    versions).  ``versions`` is the inclusive range of AF3 releases whose stock
    code has the ``stock`` forms; it only decides how a non-matching target is
    reported ("not needed" for a known version outside it, "source did not
    match" otherwise) -- whether the patch applies is decided by the source.
    """

    rewrites: tuple[Rewrite, ...] = ()
    fixed_upstream_in: str | None = None
    requires_globals: tuple[tuple[str, str], ...] = (("jnp", "jax.numpy"),)
    verified_by: str = "exact AST match of every stock expression before anything is changed"
    # Why not to apply on this machine (None: apply), asked at apply time.
    not_here: Callable[[], str | None] | None = None

    def _apply(self, module: types.ModuleType, af3_version: str | None) -> Outcome:
        reason = self.not_here() if self.not_here is not None else None
        if reason:
            return Outcome(Status.NOT_NEEDED, reason)
        for name, expected in self.requires_globals:
            if module.__dict__.get(name) is not importlib.import_module(expected):
                if self.covers(af3_version) is False:
                    return Outcome(Status.NOT_NEEDED, f"AF3 {af3_version} has no stock form of this site")
                return Outcome(Status.MISMATCH, f"module global {name!r} is not {expected}")
        located = source_rewrite.locate(module, self.function)
        kind = source_rewrite.classify(located.scope_node, self.rewrites)
        if kind == "fixed":
            return Outcome(Status.UPSTREAM, f"the guarded form is already in {self.function}")
        if kind == "mismatch":
            if self.covers(af3_version) is False:
                return Outcome(Status.NOT_NEEDED, f"AF3 {af3_version} has no stock form of this site")
            return Outcome(Status.MISMATCH, source_rewrite.describe_mismatch(located.scope_node, self.rewrites))
        host = located.host
        state = _REWRITTEN.get(host)
        if state is None or host.__code__ is not state.code:  # first rewrite of this host (or replaced since)
            state = _RewrittenHost(stock=host.__code__, code=host.__code__)
            _REWRITTEN[host] = state
        parts = {**state.parts, self.name: (located, self.rewrites)}
        state.code = host.__code__ = source_rewrite.build_code_all(tuple(parts.values()))
        state.parts = parts

        def undo():
            if host.__code__ is not state.code or self.name not in state.parts:
                return
            del state.parts[self.name]
            rest = tuple(state.parts.values())
            state.code = host.__code__ = source_rewrite.build_code_all(rest) if rest else state.stock

        missing = source_rewrite.missing_optional(located.scope_node, self.rewrites)
        status, detail = (Status.PARTIAL, "not in this source: " + ", ".join(missing)) if missing else (Status.APPLIED, "")
        return Outcome(status, detail, undo, lambda: self.name in state.parts and host.__code__ is state.code)


@dataclasses.dataclass
class _RewrittenHost:
    """A function whose code af3-cpu compiled from its source: the stock code and every patch's rewrites in it."""

    stock: types.CodeType
    code: types.CodeType
    parts: dict[str, tuple[source_rewrite.Located, tuple[Rewrite, ...]]] = dataclasses.field(default_factory=dict)


# Host function -> what is rewritten in it (weak: a reloaded module's functions are new objects).
_REWRITTEN: weakref.WeakKeyDictionary[types.FunctionType, _RewrittenHost] = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class WrapperPatch(Patch):
    """Wrap a class's method or a module function with a ``wrapt`` wrapper.

    For behaviour around AF3 calls (checks, progress) rather than inside them:
    the wrapped function's own code is untouched.
    """

    wrapper: Callable[..., Any] | None = None
    # The target's leading parameters (after self/cls), in order, that the
    # wrapper reads or replaces by name or position: checked before wrapping.
    parameters: tuple[str, ...] = ()
    verified_by: str = "the target's leading parameters checked by name before wrapping"

    def _apply(self, module: types.ModuleType, af3_version: str | None) -> Outcome:
        owner_path, _, attr = self.function.rpartition(".")
        owner: Any = module
        for part in filter(None, owner_path.split(".")):
            owner = getattr(owner, part, None)
        if owner is None or attr not in vars(owner):
            if self.covers(af3_version) is False:
                return Outcome(Status.NOT_NEEDED, f"AF3 {af3_version} has no {self.function}")
            raise source_rewrite.TargetNotFound(f"{module.__name__} has no {self.function}")
        original = vars(owner)[attr]
        found = leading_parameters(original, is_method=isinstance(owner, type), count=len(self.parameters))
        if found != self.parameters:
            raise source_rewrite.SourceMismatch(
                f"{self.function} takes ({', '.join(found) or 'nothing known'}), the wrapper needs ({', '.join(self.parameters)})"
            )
        wrapped = wrapt.FunctionWrapper(original, self.wrapper)
        setattr(owner, attr, wrapped)

        def undo():
            if vars(owner).get(attr) is wrapped:
                setattr(owner, attr, original)

        return Outcome(Status.APPLIED, "", undo, lambda: vars(owner).get(attr) is wrapped)


def leading_parameters(target: Any, *, is_method: bool, count: int) -> tuple[str, ...]:
    """The first ``count`` parameter names of ``target`` (a function, a class- or staticmethod), without self/cls."""
    if not count:
        return ()
    function = getattr(target, "__func__", target)
    try:
        names = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()
    if is_method and not isinstance(target, staticmethod) and names and names[0] in ("self", "cls"):
        names = names[1:]
    return tuple(names[:count])


def exact(patches: tuple[Patch, ...]) -> tuple[Patch, ...]:
    """``patches`` without those that change AF3's numbers (``--exact``)."""
    return tuple(p for p in patches if p.numerics is not Numerics.CHANGES)
