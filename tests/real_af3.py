"""Finding a real DeepMind AF3 for the integration tests.

``AF3_SOURCE`` may point at a checkout of DeepMind's repository (its
``src/alphafold3`` is put on ``PYTHONPATH`` of the test subprocesses; the
current interpreter must have AF3's dependencies).  Otherwise an importable
``alphafold3`` is used if it is DeepMind's.  Neither: the tests skip.
``AF3_REFERENCE_SOURCE`` may point at a second checkout (v3.0.4 or later)
whose stock ``sample()`` the patched one is compared with, bit for bit.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from af3_cpu_patch import af3_checkout, af3_install


def _source_from_env(var: str) -> pathlib.Path | None:
    value = os.environ.get(var)
    if not value:
        return None
    src = pathlib.Path(value).expanduser().resolve() / "src"
    if not (src / "alphafold3").is_dir():
        pytest.fail(f"{var}={value} is not an AF3 checkout (no src/alphafold3 in it)")
    return src


def find_af3() -> tuple[list[pathlib.Path], af3_install.AF3Install]:
    """(PYTHONPATH entries, what is there) of an importable AF3, or skip with the reason."""
    path, info = find_af3_sources()
    if not info.data_built:
        pytest.skip(f"AF3 at {info.package_dir} has no chemical components data: run its build_data first")
    return path, info


def find_af3_sources() -> tuple[list[pathlib.Path], af3_install.AF3Install]:
    """Like :func:`find_af3`, for tests that only read AF3's source files."""
    src = _source_from_env("AF3_SOURCE")
    path = [src] if src is not None else []
    info = af3_install.inspect_package(src / "alphafold3") if src is not None else af3_install.detect()
    if not info.found:
        pytest.skip("no real AlphaFold 3: set AF3_SOURCE to a DeepMind checkout or install it in this environment")
    if not info.is_deepmind:
        pytest.skip(f"the importable alphafold3 is not DeepMind's AF3 ({info.package_dir})")
    return path, info


def checkout_root(info: af3_install.AF3Install) -> pathlib.Path | None:
    """The checkout holding run_alphafold.py: AF3_SOURCE, else next to the package."""
    if os.environ.get("AF3_SOURCE"):
        return pathlib.Path(os.environ["AF3_SOURCE"]).expanduser().resolve()
    return af3_checkout.checkout_of(info)


def reference_source() -> pathlib.Path | None:
    return _source_from_env("AF3_REFERENCE_SOURCE")


def head_module(info: af3_install.AF3Install) -> str:
    if (info.package_dir / "model/network/diffusion_head.py").is_file():
        return "alphafold3.model.network.diffusion_head"
    return "alphafold3.model.diffusion.diffusion_head"
