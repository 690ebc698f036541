"""Find the AF3 checkout that holds ``run_alphafold.py``.

``run_alphafold.py`` sits at the root of DeepMind's repository, not inside
the installed ``alphafold3`` package, so it is looked up in order: the
``--af3-dir`` option, the ``AF3_DIR`` variable, then the checkout an
editable/source install of ``alphafold3`` points into (``<checkout>/src/alphafold3``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
import sys

from af3_cpu_patch.af3 import install as af3_install
from af3_cpu_patch.errors import UsageProblem


@dataclasses.dataclass(frozen=True)
class Checkout:
    root: pathlib.Path  # holds run_alphafold.py
    install: af3_install.AF3Install

    @property
    def run_alphafold(self) -> pathlib.Path:
        return self.root / "run_alphafold.py"

    @functools.cached_property
    def _script(self) -> str:
        return self.run_alphafold.read_text()

    def has_flag(self, name: str) -> bool:
        """Does this version's run_alphafold.py define ``--name``?"""
        return re.search(rf"flags\.DEFINE_\w+\(\s*['\"]{re.escape(name)}['\"]", self._script) is not None


def checkout_of(install: af3_install.AF3Install) -> pathlib.Path | None:
    """The checkout an editable/source install points into (``<checkout>/src/alphafold3``)."""
    if install.package_dir is None:
        return None
    for candidate in (install.package_dir.parent.parent, install.package_dir.parent):
        if (candidate / "run_alphafold.py").is_file():
            return candidate
    return None


def find_checkout(af3_dir: str | os.PathLike | None = None) -> Checkout:
    """Locate ``run_alphafold.py`` and make its ``alphafold3`` importable.

    A checkout whose dependencies are installed but whose package is not
    (``src/alphafold3`` only) is put on ``sys.path``.
    """
    given = af3_dir or os.environ.get("AF3_DIR")
    source = "--af3-dir" if af3_dir else "AF3_DIR"
    if given:
        root = pathlib.Path(given).expanduser().resolve()
        if not (root / "run_alphafold.py").is_file():
            raise UsageProblem(f"{source}={given} has no run_alphafold.py: point it at the root of DeepMind's alphafold3 checkout")
        src = root / "src"
        if (src / "alphafold3").is_dir() and not af3_install.detect().is_deepmind:
            sys.path.insert(0, str(src))
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
        install = af3_install.detect()  # what import alphafold3 now finds
    else:
        install = af3_install.detect()
        root = checkout_of(install)
    problem = install.problem()
    if problem:
        raise UsageProblem(problem)
    if root is None:
        raise UsageProblem(
            f"run_alphafold.py not found next to {install.package_dir}: pass --af3-dir /path/to/alphafold3 "
            "(the root of DeepMind's checkout) or set AF3_DIR"
        )
    return Checkout(root=root, install=install)
