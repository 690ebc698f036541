"""Fixtures for the tests that need a real DeepMind AF3 (from the test bed; they skip without ../shared/af3).

``af3`` is the test bed's v3.0.4 unless a test asks for other versions with
``@pytest.mark.parametrize("af3", [...], indirect=True)``.  Tests may add
rows to the patch-status table printed at the end of the run
(:func:`record_patch_status`), so CI's log shows every patch on every AF3.
"""

from __future__ import annotations

import json

import pytest

from tests import real_af3

DEFAULT_VERSION = "3.0.4"

_patch_status: dict[str, dict[str, str]] = {}  # AF3 label -> patch -> status


def record_patch_status(af3_label: str, statuses: dict[str, str]) -> None:
    _patch_status.setdefault(af3_label, {}).update(statuses)


@pytest.fixture(scope="session")
def af3(request):
    return real_af3.get(getattr(request, "param", DEFAULT_VERSION))


@pytest.fixture(scope="session")
def model_dir():
    return str(real_af3.weights())


@pytest.fixture(scope="session")
def filled_model_dir():
    """Random weights in which every layer counts (AF3 zero-initialises its output projections and gates)."""
    return str(real_af3.weights(filled=True))


@pytest.fixture(scope="session")
def protein_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "small_protein.json"
    path.write_text(json.dumps(real_af3.PROTEIN))
    return path


def pytest_terminal_summary(terminalreporter):
    if not _patch_status:
        return
    labels = list(_patch_status)
    patches = sorted({p for statuses in _patch_status.values() for p in statuses})
    width = max(len(p) for p in patches)
    terminalreporter.section("patch status on real AF3")
    terminalreporter.write_line(f"{'patch':<{width}}  " + "  ".join(f"{label:<24}" for label in labels))
    for patch in patches:
        cells = "  ".join(f"{_patch_status[label].get(patch, '-'):<24}" for label in labels)
        terminalreporter.write_line(f"{patch:<{width}}  {cells}")
