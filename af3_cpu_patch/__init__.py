"""Run an unmodified DeepMind AlphaFold 3 correctly on CPUs.

``import af3_cpu_patch`` before ``import alphafold3`` installs import hooks
that patch AF3's modules as they load, with the patches that are safe in any
script (:data:`af3_cpu_patch.patches.ALL_PATCHES`: numerics guards,
bit-identical layouts, import fixes) and AF3's own numbers
(:class:`af3_cpu_patch.settings.Settings`).  The API follows OpenTelemetry's
instrumentors: :func:`install` (idempotent), :func:`uninstall` (restores the
original code exactly) and :func:`report`.  The ``af3-cpu`` command adds its
own patches and settings (:func:`af3_cpu_patch.runtime.start_af3`).
"""

from af3_cpu_patch.af3 import install as af3_install
from af3_cpu_patch.engine import hooks
from af3_cpu_patch.engine.hooks import (
    AF3PatchWarning,
    PatchReport,
    is_installed,
    uninstall,
)
from af3_cpu_patch.engine.patch import Patch, Status
from af3_cpu_patch.patches import ALL_PATCHES

__version__ = "0.1.0"
__all__ = ["AF3PatchWarning", "PatchReport", "Status", "install", "is_installed", "report", "uninstall", "format_report"]


def install(patches: tuple[Patch, ...] | None = None) -> list[PatchReport]:
    """Patch AF3's modules as they load (at once for those already loaded); ``patches`` default to ``ALL_PATCHES``."""
    return hooks.install(ALL_PATCHES if patches is None else tuple(patches))


def report() -> list[PatchReport]:
    """Per patch: what happened, where, on which AF3 version."""
    return hooks.report(ALL_PATCHES)


def format_report() -> str:
    """The patch report as text, one line per patch, headed by the AF3 found."""
    lines = [af3_install.detect().describe()]
    lines += [f"  {row.line()}" for row in report()]
    return "\n".join(lines)


install()
