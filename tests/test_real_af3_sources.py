"""Every registered patch recognises its target in a real AF3's source files.

Offline: the files are parsed, not imported, so this runs for any AF3 version
pointed at by AF3_SOURCE (v3.0.0/1 included) without AF3's dependencies.
"""

from __future__ import annotations

import pytest

from af3_cpu_patch import source_rewrite
from af3_cpu_patch.patches import CLI_PATCHES, PROGRESS_PATCHES
from af3_cpu_patch.registry import SourcePatch, WrapperPatch, version_tuple
from tests import real_af3

PATCHES = [p for p in CLI_PATCHES + PROGRESS_PATCHES if isinstance(p, (SourcePatch, WrapperPatch))]


@pytest.fixture(scope="module")
def af3():
    _, info = real_af3.find_af3_sources()
    if info.version is None:
        pytest.skip(f"AF3 at {info.package_dir} is not a recognised release (modified?): nothing to compare with")
    return info, real_af3.checkout_root(info)


def _module_file(info, root, module):
    if module == "run_alphafold":
        return root / "run_alphafold.py" if root else None
    return info.package_dir.joinpath(*module.split(".")[1:]).with_suffix(".py")


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name)
def test_patch_recognises_its_target(patch, af3):
    info, root = af3
    files = [f for f in (_module_file(info, root, m) for m in patch.modules) if f is not None and f.is_file()]
    covered = patch.covers(info.version)
    if not covered:
        fixed_in = getattr(patch, "fixed_upstream_in", None)
        if isinstance(patch, SourcePatch) and fixed_in and version_tuple(info.version) >= version_tuple(fixed_in):
            assert files, f"{patch.modules} missing in AF3 {info.version}"
            assert source_rewrite.classify_source(files[0].read_text(), patch.function, patch.rewrites) == "fixed"
            return
        pytest.skip(f"{patch.name} is for AF3 {patch.versions[0]}-{patch.versions[1]}, this is {info.version}")
    assert files, f"none of {patch.modules} exists in AF3 {info.version}"
    source = files[0].read_text()
    if isinstance(patch, SourcePatch):
        assert source_rewrite.classify_source(source, patch.function, patch.rewrites) == "stock"
    else:
        import ast

        parts = patch.function.split(".")
        source_rewrite.find_def(ast.parse(source), parts, files[0].name)  # raises if absent
