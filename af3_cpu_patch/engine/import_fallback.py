"""Import a module that cannot be imported here as a placeholder that explains why when used."""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Callable

from af3_cpu_patch.engine.patch import Outcome, Patch, Status


class _PlaceholderLoader(importlib.abc.Loader):
    """Runs the real module; if that raises, leaves a placeholder that explains why on use."""

    def __init__(self, real: importlib.abc.Loader, patch: ImportFallback, record: Callable[[str, Outcome], None]):
        self._real, self._patch, self._record = real, patch, record

    def create_module(self, spec):
        return self._real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        try:
            self._real.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is what we replace
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            keep = {k: v for k, v in vars(module).items() if k in ("__name__", "__spec__", "__loader__", "__file__", "__package__")}
            vars(module).clear()
            vars(module).update(keep)
            message = f"{module.__name__} could not be imported here ({reason}). {self._patch.hint}"

            def __getattr__(name):
                raise RuntimeError(message)

            module.__getattr__ = __getattr__
            for name in [m for m in sys.modules if m.startswith(module.__name__ + ".")]:
                del sys.modules[name]
            outcome = Outcome(Status.APPLIED, f"real import failed ({reason}); placeholder in place", None, lambda: True)
            self._record(module.__name__, outcome)
        else:
            self._record(module.__name__, Outcome(Status.NOT_NEEDED, f"{module.__name__} imports fine here"))


class _FallbackFinder(importlib.abc.MetaPathFinder):
    def __init__(self, patch: ImportFallback, record):
        self.patch, self.record = patch, record

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.patch.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PlaceholderLoader(spec.loader, self.patch, self.record)
        return spec


@dataclasses.dataclass(frozen=True)
class ImportFallback(Patch):
    """Let a module that cannot be imported here be imported as a placeholder.

    For GPU-only dependencies that AF3 imports at module level but only uses
    on the GPU path: the placeholder raises ``hint`` when actually used.
    """

    hint: str = ""
    verified_by: str = "the real import runs first; the placeholder replaces it only where it raises"
    _finders: list = dataclasses.field(default_factory=list, compare=False, repr=False)

    def arm(self, record) -> None:
        if not self._finders:
            finder = _FallbackFinder(self, record)
            self._finders.append(finder)
            sys.meta_path.insert(0, finder)

    def disarm(self) -> None:
        while self._finders:
            finder = self._finders.pop()
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)

    def _apply(self, module, af3_version):
        # The post-import hook reaches here only when the real module loaded
        # (a placeholder is recorded as applied and in place by its loader).
        return Outcome(Status.NOT_NEEDED, f"{module.__name__} imports fine here")
