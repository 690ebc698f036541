"""Apply the registered patches when AF3's modules load; undo them on request.

One ``wrapt`` post-import hook per target module, registered once per
process (wrapt hooks fire once and cannot be unregistered, so a hook checks
whether the plugin is still installed).  Patches must be in place before AF3
code is traced: jax's jit caches keep the code they traced, so a module that
was already imported gets patched at once, with a warning.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import types
import warnings

import wrapt

from af3_cpu_patch.af3 import install as af3_install
from af3_cpu_patch.engine.patch import Numerics, Outcome, Patch, Status


class AF3PatchWarning(UserWarning):
    """A patch could not be applied, or was applied after AF3 was imported."""


@dataclasses.dataclass(frozen=True)
class PatchReport:
    """One row of :func:`report`."""

    patch: str
    status: Status
    module: str | None
    file: str | None
    af3_version: str | None
    detail: str
    why: str
    numerics: Numerics
    difference: str = ""

    def line(self) -> str:
        where = f" in {self.module}" if self.module else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.patch}: {self.status}{where}{detail} [{self.effect()}]"

    def effect(self) -> str:
        """What the patch does to the numbers: bit-identical, needed, or its measured difference."""
        return f"{self.numerics}: {self.difference}" if self.difference else str(self.numerics)


_lock = threading.RLock()
_installed = False
_patches: tuple[Patch, ...] = ()
_hooked: set[str] = set()  # module names with a wrapt hook registered and not yet fired
_results: dict[str, tuple[str, Outcome]] = {}  # patch name -> (module name, outcome)


def install(patches: tuple[Patch, ...]) -> list[PatchReport]:
    """Start patching AF3 modules as they load (now, for those already loaded).

    ``patches`` are added to those already installed.  Idempotent: installing
    what is installed changes nothing.
    """
    global _installed, _patches
    wanted = tuple(patches)
    with _lock:
        new = tuple(p for p in wanted if p not in _patches or not _installed)
        if _installed and not new:
            return report()
        _patches = (_patches if _installed else ()) + new
        _installed = True
        for patch in new:
            patch.arm(lambda module_name, outcome, name=patch.name: _record(name, module_name, outcome))
        names = sorted({m for p in new for m in p.modules})
        already = [n for n in names if n in sys.modules]
        for name in names:
            if name in sys.modules:
                _on_import(sys.modules[name])
            elif name not in _hooked:
                _hooked.add(name)
                wrapt.register_post_import_hook(_on_import, name)
    applied_late = [n for n in already if any(r.status.in_effect and r.module == n for r in report())]
    if applied_late:
        warnings.warn(
            f"af3_cpu_patch patched {', '.join(applied_late)} after it was imported: anything jax traced "
            "from it before now keeps the unpatched code; call jax.clear_caches() (or import af3_cpu_patch "
            "before alphafold3).",
            AF3PatchWarning,
            stacklevel=2,
        )
    return report()


def uninstall() -> list[PatchReport]:
    """Restore every patched function's original code and stop patching."""
    global _installed
    with _lock:
        for name, (module, outcome) in reversed(list(_results.items())):  # wrappers stack: undo newest first
            if outcome.status.in_effect and outcome.undo is not None:
                outcome.undo()
                _results[name] = (module, Outcome(Status.REMOVED, "original restored"))
        for patch in _patches:
            patch.disarm()
        _installed = False
        return report()


def is_installed() -> bool:
    return _installed


def applied(patch_name: str) -> bool:
    """Is this patch installed and in place now (for patches that only make sense together)?"""
    with _lock:
        entry = _results.get(patch_name)
        return bool(_installed and entry and entry[1].status.in_effect and entry[1].in_place())


def report(known: tuple[Patch, ...] = ()) -> list[PatchReport]:
    """Per installed patch (or, before any install, per ``known`` patch): what happened, where, on which AF3 version."""
    with _lock:
        info = af3_install.detect()
        rows = []
        for patch in _patches or known:
            module_name, outcome = _results.get(patch.name, (None, Outcome(Status.PENDING, "")))
            module = sys.modules.get(module_name) if module_name else None
            if outcome.status is Status.PENDING and not _installed:
                outcome = Outcome(Status.PENDING, "af3_cpu_patch is not installed")
            elif outcome.status is Status.PENDING and patch.covers(info.version) is False:
                outcome = Outcome(Status.NOT_NEEDED, f"AF3 {info.version} does not have this site")
            rows.append(
                PatchReport(
                    patch=patch.name,
                    status=outcome.status,
                    module=module_name,
                    file=getattr(module, "__file__", None),
                    af3_version=info.version,
                    detail=outcome.detail,
                    why=patch.why,
                    numerics=patch.numerics,
                    difference=patch.difference,
                )
            )
        return rows


def _on_import(module: types.ModuleType) -> None:
    """wrapt post-import hook: patch everything that targets ``module``."""
    with _lock:
        _hooked.discard(module.__name__)
        if not _installed:
            return
        version = af3_install.detect().version
        for patch in _patches:
            if module.__name__ not in patch.modules:
                continue
            previous = _results.get(patch.name)
            if previous and previous[1].status.in_effect and previous[1].in_place():
                continue  # idempotent: already in place
            _record(patch.name, module.__name__, patch.apply(module, version))


def _record(patch_name: str, module_name: str, outcome: Outcome) -> None:
    with _lock:
        _results[patch_name] = (module_name, outcome)
    if outcome.status in (Status.MISMATCH, Status.NOT_FOUND, Status.ERROR):
        warnings.warn(
            f"af3_cpu_patch left {module_name} untouched for patch {patch_name!r}: {outcome.status} ({outcome.detail})",
            AF3PatchWarning,
            stacklevel=3,
        )
