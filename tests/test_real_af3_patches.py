"""Every patch on every AF3 of the test bed (v3.0.0-v3.0.4 and main): what the import hooks really do.

Each AF3 is imported in its own interpreter with the batch and progress
patches installed (the most the CLI installs), and every patch's report is
checked against its declaration: a patch written for this version is in
effect (or the site is already fixed upstream), any other is reported not
needed -- never "source did not match", "target not found" or an error.
The statuses are printed as a table at the end of the run.
"""

from __future__ import annotations

import pytest

from af3_cpu_patch.patches import BATCH_PATCHES, PROGRESS_PATCHES
from af3_cpu_patch.engine.patch import SourcePatch, Status, version_tuple
from tests import real_af3, testbed
from tests.conftest import record_patch_status
from tests.helpers import run_python

PATCHES = {p.name: p for p in BATCH_PATCHES + PROGRESS_PATCHES}

REPORT = """
import importlib, json, os, sys
import af3_cpu_patch
from af3_cpu_patch.patches import BATCH_PATCHES, PROGRESS_PATCHES
af3_cpu_patch.install(BATCH_PATCHES + PROGRESS_PATCHES)
sys.path.insert(0, os.environ["AF3_ROOT"])
import run_alphafold
for patch in BATCH_PATCHES + PROGRESS_PATCHES:
    for module in patch.modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            pass  # the other version's module path
print(json.dumps({r.patch: [str(r.status), r.detail, r.af3_version] for r in af3_cpu_patch.report()}))
"""

# Patches that decide at apply time, from this CPU and the run's settings, not to apply here.
CONDITIONAL = {"attention-layout-logits-self", "attention-layout-logits-cross",
               "attention-layout-self", "attention-layout-cross"}


@pytest.mark.parametrize("af3", testbed.VERSIONS, indirect=True)
def test_every_patch_is_in_effect_or_rightly_not_needed(af3):
    report = run_python(REPORT, pythonpath=af3.path, python=af3.python, env={"AF3_ROOT": str(af3.root)}, timeout=600)
    report.pop("_stderr")
    record_patch_status(af3.name if af3.name != "main" else "main (3.0.4+)", {name: s for name, (s, _, _) in report.items()})
    assert set(report) == set(PATCHES)
    version = version_tuple(af3.info.version)
    for name, (status, detail, reported_version) in report.items():
        patch, status = PATCHES[name], Status(status)
        assert reported_version == af3.info.version
        assert status not in (Status.MISMATCH, Status.NOT_FOUND, Status.ERROR, Status.PENDING), (name, status, detail)
        fixed_in = getattr(patch, "fixed_upstream_in", None)
        if isinstance(patch, SourcePatch) and fixed_in and version >= version_tuple(fixed_in):
            assert status is Status.UPSTREAM, (name, status, detail)
        elif patch.covers(af3.info.version):
            assert status.in_effect or (name in CONDITIONAL and status is Status.NOT_NEEDED), (name, status, detail)
        else:
            assert status is Status.NOT_NEEDED, (name, status, detail)


def test_main_is_reported_past_its_release():
    af3 = real_af3.get("main", data=False)
    assert af3.info.version == "3.0.4" and af3.info.past_release
    assert af3.info.label == "3.0.4 + later commits"
    for release in ("3.0.3", "3.0.4"):
        info = real_af3.get(release, data=False).info
        assert (info.version, info.past_release, info.label) == (release, False, release)
