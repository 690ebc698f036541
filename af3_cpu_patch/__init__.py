"""Run an unmodified DeepMind AlphaFold 3 correctly on CPUs.

``import af3_cpu_patch`` before ``import alphafold3`` installs import hooks
that patch AF3's modules as they load (see :mod:`af3_cpu_patch.patches`).
The API follows OpenTelemetry's instrumentors: :func:`install` (idempotent),
:func:`uninstall` (restores the original code exactly) and :func:`report`.
"""

from af3_cpu_patch.hooks import (
    AF3PatchWarning,
    PatchReport,
    install,
    is_installed,
    report,
    uninstall,
)
from af3_cpu_patch.registry import Status

__version__ = "0.1.0"
__all__ = ["AF3PatchWarning", "PatchReport", "Status", "install", "is_installed", "report", "uninstall", "format_report"]


def format_report() -> str:
    """The patch report as text, one line per patch, headed by the AF3 found."""
    from af3_cpu_patch import af3_install

    lines = [af3_install.detect().describe()]
    lines += [f"  {row.line()}" for row in report()]
    return "\n".join(lines)


install()
