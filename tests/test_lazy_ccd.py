"""The lazy CCD: AF3's chemical components read one at a time from an index.

Equality with AF3's real CCD, every component, is in ``test_real_af3_sources.py``.
"""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
import threading

import pytest

from af3_cpu_patch.patches import lazy_ccd
from tests.helpers import STANDIN, run_python

COMPONENTS = {
    "ALA": {"_chem_comp.id": ["ALA"], "_chem_comp_atom.atom_id": ["N", "CA", "C", "O", "CB"]},
    "MG": {"_chem_comp.id": ["MG"], "_chem_comp_atom.atom_id": ["MG"]},
    "HOH": {"_chem_comp.id": ("HOH",), "_chem_comp_atom.atom_id": ("O",)},
}


@pytest.fixture
def ccd_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "ccd.pickle"
    path.write_bytes(pickle.dumps(COMPONENTS))
    return path


def test_reads_the_same_components_in_the_same_order(ccd_pickle):
    ccd = lazy_ccd.open_ccd(ccd_pickle)
    assert list(ccd) == list(COMPONENTS) and len(ccd) == 3
    assert {key: ccd[key] for key in ccd} == COMPONENTS
    assert type(ccd["HOH"]["_chem_comp_atom.atom_id"]) is tuple  # types kept, as AF3's pickle has them
    assert ccd.get("ATP") is None and ccd.get("ATP", "x") == "x" and "ATP" not in ccd and "MG" in ccd
    assert ccd["ALA"] is ccd["ALA"]  # read once, then kept: one object, as in AF3's dict
    with pytest.raises(KeyError):
        ccd["ATP"]
    assert 5 not in ccd


def test_a_user_ccd_updates_an_overlay_as_it_would_the_dict(ccd_pickle):
    ccd = lazy_ccd.open_ccd(ccd_pickle)
    ccd.update({"MG": {"_chem_comp.id": ["MG2"]}, "LIG": {"_chem_comp.id": ["LIG"]}})
    expected = dict(COMPONENTS)
    expected.update({"MG": {"_chem_comp.id": ["MG2"]}, "LIG": {"_chem_comp.id": ["LIG"]}})
    assert list(ccd) == list(expected) and dict(ccd.items()) == expected
    assert lazy_ccd.open_ccd(ccd_pickle)["MG"] == COMPONENTS["MG"]  # the index itself is unchanged
    assert pickle.loads(pickle.dumps(ccd)) == expected


def test_index_is_built_once_and_again_for_a_rebuilt_pickle(ccd_pickle):
    first = lazy_ccd.ensure_index(ccd_pickle)
    built = first.stat().st_mtime_ns
    assert lazy_ccd.ensure_index(ccd_pickle) == first and first.stat().st_mtime_ns == built
    ccd_pickle.write_bytes(pickle.dumps({**COMPONENTS, "ZN": {"_chem_comp.id": ["ZN"]}}))
    second = lazy_ccd.ensure_index(ccd_pickle)
    assert second != first and not first.exists()  # the stale index is removed
    assert list(lazy_ccd.LazyCcd(second)) == ["ALA", "MG", "HOH", "ZN"]
    assert not list(second.parent.glob("*.partial"))  # no partial files left


def test_a_pickle_with_code_in_it_is_refused(ccd_pickle):
    ccd_pickle.write_bytes(pickle.dumps({"ALA": shutil.rmtree}))
    with pytest.raises(OSError, match="disallowed shutil.rmtree"):
        lazy_ccd.open_ccd(ccd_pickle)


def _read_in_child(ccd, queue):
    queue.put(ccd["MG"])


def test_threads_and_forked_children_read_it(ccd_pickle):
    ccd = lazy_ccd.open_ccd(ccd_pickle)
    assert "ALA" in ccd  # the connection is open before the fork
    results = []
    threads = [threading.Thread(target=lambda key=key: results.append(ccd[key])) for key in ["ALA", "MG", "HOH"] * 5]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, results)) == sorted(map(str, list(COMPONENTS.values()) * 5))
    if "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_read_in_child, args=(ccd, queue))
        child.start()
        assert queue.get(timeout=60) == COMPONENTS["MG"]
        child.join(60)
        assert child.exitcode == 0


STANDIN_CCD = """
import json, os, sys
import af3_cpu_patch
from af3_cpu_patch.patches import CLI_PATCHES
af3_cpu_patch.install(CLI_PATCHES)
from alphafold3.constants import chemical_components as cc
path = sys.argv[1] if len(sys.argv) > 1 else os.environ["CCD_PICKLE"]
first = cc.Ccd(path)
second = cc.Ccd(path, user_ccd=json.dumps({"LIG": {"_chem_comp.id": ["LIG"]}}))
out = {
    "report": {r.patch: str(r.status) for r in af3_cpu_patch.report()},
    "type": type(first._dict).__name__,
    "ala": first.get("ALA"), "missing": first.get("ATP"),
    "keys_first": list(first), "keys_second": list(second),
}
af3_cpu_patch.uninstall()
cc._load_ccd_pickle_cached.cache_clear() if hasattr(cc, "_load_ccd_pickle_cached") else None
out["type_after_uninstall"] = type(cc.Ccd(path)._dict).__name__
print(json.dumps(out))
"""


def run_standin(pythonpath, ccd_pickle, tmp_path, cache):
    return run_python(
        STANDIN_CCD, pythonpath=pythonpath, env={"CCD_PICKLE": str(ccd_pickle), "XDG_CACHE_HOME": str(cache)}
    )


def test_patch_on_the_standin_shares_one_lazy_ccd_per_path(ccd_pickle, tmp_path):
    result = run_standin([STANDIN], ccd_pickle, tmp_path, tmp_path / "cache")
    assert result["report"]["lazy-ccd"] == "applied"
    assert result["report"]["lazy-ccd-per-instance"] == "not needed"
    assert result["type"] == "LazyCcd" and result["type_after_uninstall"] == "dict"
    assert result["ala"] == COMPONENTS["ALA"] and result["missing"] is None
    # as in AF3 v3.0.2+: the user CCD updates the dict both Ccd objects share
    assert result["keys_first"] == result["keys_second"] == list(COMPONENTS) + ["LIG"]


V300_INIT = """\
    with open(self._ccd_pickle_path, 'rb') as f:
      self._dict = pickle.loads(f.read())
"""


def test_patch_on_a_v3_0_0_shaped_standin_gives_each_ccd_its_own(ccd_pickle, tmp_path):
    """v3.0.0/1 unpickle the CCD in every ``Ccd.__init__``: each object gets its own lazy CCD."""
    src = tmp_path / "src"
    shutil.copytree(STANDIN, src)
    module = src / "alphafold3" / "constants" / "chemical_components.py"
    text = module.read_text()
    text = text.replace("    self._dict = _load_ccd_pickle_cached(self._ccd_pickle_path)\n", V300_INIT)
    module.write_text(text.split("@functools.cache")[0] + "class Ccd" + text.split("class Ccd", 1)[1])
    (src / "alphafold3" / "version.py").write_text('__version__ = "3.0.0"\n')
    result = run_standin([src], ccd_pickle, tmp_path, tmp_path / "cache")
    assert result["report"]["lazy-ccd-per-instance"] == "applied"
    assert result["report"]["lazy-ccd"] == "not needed"
    assert result["type"] == "LazyCcd" and result["type_after_uninstall"] == "dict"
    assert result["keys_first"] == list(COMPONENTS) and result["keys_second"] == list(COMPONENTS) + ["LIG"]


def test_without_a_writable_cache_af3_loads_its_pickle(ccd_pickle, tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    result = run_standin([STANDIN], ccd_pickle, tmp_path, blocked)
    assert result["type"] == "dict" and result["ala"] == COMPONENTS["ALA"]
    notes = [line for line in result["_stderr"].splitlines() if "CCD" in line]
    assert len(notes) == 1 and notes[0].startswith("af3-cpu: note: could not index the CCD"), result["_stderr"]
