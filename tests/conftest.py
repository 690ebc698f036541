"""Fixtures for the tests that need a real DeepMind AF3 (from the test bed; they skip without ../shared/af3).

``af3`` is the test bed's v3.0.4 unless a test asks for other versions with
``@pytest.mark.parametrize("af3", [...], indirect=True)``.  Tests may add
rows to the tables printed at the end of the run (:func:`record_patch_status`,
:func:`record_measurement`), so CI's log shows every patch on every AF3 and
what was measured.
"""

from __future__ import annotations

import json

import pytest

from tests import real_af3

DEFAULT_VERSION = "3.0.4"

# section -> row -> column -> text, for the end of the run
_tables: dict[str, dict[str, dict[str, str]]] = {}


def record_patch_status(af3_label: str, statuses: dict[str, str]) -> None:
    for patch, status in statuses.items():
        _tables.setdefault("patch status on real AF3", {}).setdefault(patch, {})[af3_label] = status


def record_measurement(what: str, value: str) -> None:
    _tables.setdefault("measured on real AF3", {})[what] = {"": value}


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


def _merge(tables: dict) -> None:
    for section, rows in tables.items():
        for row, columns in rows.items():
            _tables.setdefault(section, {}).setdefault(row, {}).update(columns)


def pytest_sessionfinish(session):
    """In a pytest-xdist worker: hand the recorded rows to the controller, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["af3_tables"] = json.dumps(_tables)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _merge(json.loads(getattr(node, "workeroutput", {}).get("af3_tables", "{}")))


def pytest_terminal_summary(terminalreporter):
    for section, rows in sorted(_tables.items()):
        columns = sorted({c for cells in rows.values() for c in cells})
        width = max(len(r) for r in rows)
        terminalreporter.section(section)
        if columns != [""]:
            terminalreporter.write_line(f"{'':<{width}}  " + "  ".join(f"{c:<22}" for c in columns))
        for row in sorted(rows):
            terminalreporter.write_line(f"{row:<{width}}  " + "  ".join(f"{rows[row].get(c, '-'):<22}" for c in columns))
