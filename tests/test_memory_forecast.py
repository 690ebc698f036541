"""The memory forecast: tokens from the input JSON, buckets, and refusing what will not fit."""

from __future__ import annotations

import json

import pytest

from af3_cpu_patch.host import memory_forecast as mf
from af3_cpu_patch.errors import UsageProblem
from tests.test_cli import SMALL_INPUT, assert_one_line_error, invoke, workdir  # noqa: F401 - fixture


def test_tokens_counted_from_the_json():
    fold_input = {"sequences": [
        {"protein": {"id": ["A", "B"], "sequence": "MKTAY", "modifications": [{"ptmType": "SEP", "ptmPosition": 2}]}},
        {"rna": {"id": "C", "sequence": "ACGU", "modifications": [{"modificationType": "PSU", "basePosition": 4}]}},
        {"ligand": {"id": "D", "smiles": "CC(=O)[O-]"}},  # 4 heavy atoms
        {"ligand": {"id": ["E", "F"], "ccdCodes": ["ATP"]}},
        {"ligand": {"id": ["G", "H", "I"], "ccdCodes": ["ZN"]}},
    ]}
    sep, psu, atp, zn = (mf.MODIFIED_RESIDUE_TOKENS["SEP"], mf.MODIFIED_RESIDUE_TOKENS["PSU"],
                         mf.LIGAND_TOKENS["ATP"], mf.LIGAND_TOKENS["ZN"])
    assert (sep, psu, atp, zn) == (10, 20, 31, 1)  # per heavy atom; test_real_af3_forecast checks them against AF3
    assert mf.count_tokens(fold_input) == 2 * (4 + sep) + (3 + psu) + 4 + 2 * atp + 3 * zn


def test_components_missing_from_the_table_count_high():
    known = {"sequences": [{"protein": {"id": "A", "sequence": "MKTAY", "modifications": [{"ptmType": "SEP", "ptmPosition": 2}]}},
                           {"ligand": {"id": "B", "ccdCodes": ["HEM"]}}]}
    unknown = {"sequences": [{"protein": {"id": "A", "sequence": "MKTAY", "modifications": [{"ptmType": "XYZ", "ptmPosition": 2}]}},
                             {"ligand": {"id": "B", "ccdCodes": ["QQQ"]}}]}
    assert mf.count_tokens(unknown) == 4 + mf.UNKNOWN_MODIFIED_RESIDUE_TOKENS + mf.UNKNOWN_LIGAND_TOKENS > mf.count_tokens(known)
    assert mf.UNKNOWN_MODIFIED_RESIDUE_TOKENS >= max(mf.MODIFIED_RESIDUE_TOKENS.values())


def test_metal_ions_do_not_move_the_bucket():
    """A 250-residue protein with four zinc ions: 254 tokens, AF3's bucket 256 (not 512)."""
    fold_input = {"name": "zinc_finger", "sequences": [
        {"protein": {"id": "A", "sequence": "M" * 250}}, {"ligand": {"id": ["B", "C", "D", "E"], "ccdCodes": ["ZN"]}}]}
    forecast = mf.forecast(fold_input, whole_ccd=False)
    assert (forecast.tokens, forecast.bucket) == (254, 256)
    assert forecast.peak_gb == mf.forecast_gb(256) < mf.forecast_gb(512)


def test_a_run_that_loads_the_whole_ccd_is_forecast_higher(tmp_path, monkeypatch):
    fold_input = {"name": "p", "sequences": [{"protein": {"id": "A", "sequence": "M" * 40}}]}
    indexed, whole = mf.forecast(fold_input, whole_ccd=False), mf.forecast(fold_input, whole_ccd=True)
    assert whole.peak_gb == pytest.approx(indexed.peak_gb + mf.WHOLE_CCD_GB * mf.MARGIN, abs=0.11)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "new" / "cache"))  # can be made: the index will be used
    assert mf.forecast(fold_input).peak_gb == indexed.peak_gb
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked / "cache"))  # cannot be made: AF3 loads its pickle
    assert mf.forecast(fold_input).peak_gb == whole.peak_gb


def test_buckets():
    assert [mf.bucket_for(n) for n in (1, 16, 17, 25, 32, 33, 41, 49, 57, 65, 81, 97, 113, 200, 257)] == [16, 16, 24, 32, 32, 40, 48, 56, 64, 80, 96, 112, 128, 256, 384]
    assert mf.bucket_for(40, "stock") == 256
    assert mf.bucket_for(9000, "32,64") == 9000  # past the last bucket AF3 does not pad


def test_forecast_grows_with_the_bucket():
    values = [mf.forecast_gb(b) for b in (32, 64, 128, 256, 512, 1024)]
    assert values == sorted(values) and values[0] > 1 and values[-1] > values[0]


def test_max_memory_values():
    assert mf.parse_max_memory("none") == float("inf")
    assert mf.parse_max_memory("20GB") == 20 and mf.parse_max_memory("12.5") == 12.5
    with pytest.raises(UsageProblem, match="not a size"):
        mf.parse_max_memory("lots")
    available = mf.available_gb()
    assert available is None or available > 0


def test_predict_refuses_an_input_that_will_not_fit(workdir):  # noqa: F811 - fixture
    big = {**SMALL_INPUT, "sequences": [{"protein": {"id": "A", "sequence": "M" * 600, "unpairedMsa": "", "pairedMsa": "", "templates": []}}]}
    (workdir / "big.json").write_text(json.dumps(big))
    result = invoke("predict", workdir / "big.json", "--model-dir", workdir / "weights", "--output-dir", workdir / "out",
                    "--no-run-data-pipeline", "--max-memory", "8")
    assert_one_line_error(result, 2, "600 tokens -> bucket 768", "forecast peak memory", "more than the 8 GB", "--max-memory none")
    assert not (workdir / "out").exists()
    result = invoke("predict", workdir / "big.json", "--model-dir", workdir / "weights", "--max-memory", "much")
    assert_one_line_error(result, 2, "--max-memory", "not a size")
