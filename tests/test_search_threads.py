"""HMMER threads per search (issue #25 item 6): the sizing, and that predict and the batch data stage pass it to AF3.

On a stand-in checkout whose run_alphafold.py has AF3's ``--*_n_cpu`` flags
(a copy of the CLI tests' stand-in with the flags added; no AF3 code).  Real
AF3's flags, its concurrency and the MSAs the sized searches find:
``tests/test_real_af3_data_pipeline.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from af3_cpu_patch import predict
from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.host import cpu_info
from af3_cpu_patch.host import search_threads
from tests.helpers import ROOT, STANDIN, STANDIN_CHECKOUT

NAMES = ("jackhmmer_n_cpu", "nhmmer_n_cpu", "hmmsearch_n_cpu")


def test_each_search_gets_its_share_of_the_cores():
    for cores in range(1, 257):
        for name, concurrent in search_threads.CONCURRENT_SEARCHES.items():
            n = search_threads.per_search(cores, concurrent)
            assert 1 <= n <= 8, (cores, name, n)
            assert n * concurrent <= max(cores, concurrent), (cores, name, n)  # never more threads than cores
            assert n == 8 or (n + 1) * concurrent > cores, (cores, name, n)  # and no core left idle below AF3's cap
    # A 2-core job: AF3 starts 4 x 2 jackhmmer threads; sized, one per search.
    assert [search_threads.per_search(2, c) for c in (4, 3, 1)] == [1, 1, 2]
    assert [search_threads.per_search(16, c) for c in (4, 3, 1)] == [4, 5, 8]


def test_flags_the_user_passed_are_theirs():
    given = search_threads.given_flags(["--jackhmmer_n_cpu=6", "-nhmmer_n_cpu", "5", "--db_dir=/x"])
    assert given == {"jackhmmer_n_cpu", "nhmmer_n_cpu", "db_dir"}
    flags = search_threads.flags(16, lambda name: True, ["--jackhmmer_n_cpu=6", "-nhmmer_n_cpu", "5"])
    assert flags == ["--hmmsearch_n_cpu=8"]


def _checkout(tmp_path, names) -> af3_checkout.Checkout:
    """A run_alphafold.py that defines only ``names`` (what ``has_flag`` reads)."""
    root = tmp_path / "checkout"
    root.mkdir(parents=True)
    (root / "run_alphafold.py").write_text("".join(f"_F{i} = flags.DEFINE_integer(\n    '{n}', 8, 'help')\n"
                                                   for i, n in enumerate(names)))
    return af3_checkout.Checkout(root=root, install=None)


def _argv(tmp_path, checkout, run_data_pipeline=True, extra=()):
    options = predict.PredictOptions(input=tmp_path / "in.json", model_dir=tmp_path, output_dir=tmp_path / "out",
                                     run_data_pipeline=run_data_pipeline, extra=tuple(extra), quiet=True, cache_dir=None)
    return predict.af3_flags(options, checkout, tmp_path / "out")


def _values(argv) -> dict:
    return {a[2:].split("=")[0]: int(a.split("=")[1]) for a in argv if a.lstrip("-").split("=")[0] in NAMES}


@pytest.mark.parametrize("cores", [1, 2, 12, 64])
def test_af3_flags_size_only_the_flags_the_checkout_has(tmp_path, monkeypatch, cores):
    monkeypatch.setattr(cpu_info, "usable_cores", lambda: cores)
    v304 = _checkout(tmp_path / "v3.0.4", NAMES[:2])  # v3.0.0 - v3.0.4: no --hmmsearch_n_cpu
    main = _checkout(tmp_path / "main", NAMES)
    expected = {name: search_threads.per_search(cores, search_threads.CONCURRENT_SEARCHES[name]) for name in NAMES}
    assert _values(_argv(tmp_path, v304)) == {n: expected[n] for n in NAMES[:2]}
    assert _values(_argv(tmp_path, main)) == expected
    assert _values(_argv(tmp_path, main, run_data_pipeline=False)) == {}  # no searches, no flags
    assert _values(_argv(tmp_path, _checkout(tmp_path / "none", ()))) == {}


def test_af3_flags_keep_what_the_user_passed(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_info, "usable_cores", lambda: 2)
    argv = _argv(tmp_path, _checkout(tmp_path, NAMES), extra=["--jackhmmer_n_cpu=6", "--nhmmer_n_cpu", "5"])
    assert [a for a in argv if "n_cpu" in a] == ["--hmmsearch_n_cpu=2", "--jackhmmer_n_cpu=6", "--nhmmer_n_cpu"]
    assert argv[-1] == "5"


LOGGER = '''
import json as _json
_SEARCH_FLAGS = [
    flags.DEFINE_integer("jackhmmer_n_cpu", min(len(os.sched_getaffinity(0)), 8), "HMMER threads", lower_bound=0),
    flags.DEFINE_integer("nhmmer_n_cpu", min(len(os.sched_getaffinity(0)), 8), "HMMER threads", lower_bound=0),
    flags.DEFINE_integer("hmmsearch_n_cpu", min(len(os.sched_getaffinity(0)), 8), "HMMER threads", lower_bound=0),
]


def _log_search_threads():
    with open(os.environ["SEARCH_THREADS_LOG"], "a") as log:
        log.write(_json.dumps({f.name: f.value for f in _SEARCH_FLAGS}) + "\\n")


def main(_):
    _log_search_threads()
'''


@pytest.fixture
def checkout_with_search_flags(tmp_path):
    """The stand-in checkout, its run_alphafold.py given AF3's three HMMER thread flags; logs what absl parsed."""
    checkout = tmp_path / "checkout"
    shutil.copytree(STANDIN_CHECKOUT, checkout)
    script = checkout / "run_alphafold.py"
    text = script.read_text()
    assert text.count("\ndef main(_):\n") == 1, "the stand-in's main() changed: update this fixture"
    script.write_text(text.replace("\ndef main(_):\n", LOGGER))
    return checkout


def _run(tmp_path, args):
    env = {k: v for k, v in os.environ.items() if k not in ("AF3_CPU_PATCH", "AF3_DIR")}
    env.update(PYTHONPATH=os.pathsep.join([str(STANDIN), str(ROOT)]), SEARCH_THREADS_LOG=str(tmp_path / "threads.log"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "af3_cpu_patch", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "threads.log").read_text().splitlines()
    (tmp_path / "threads.log").unlink()
    return [json.loads(line) for line in lines]


def test_predict_and_the_batch_data_stage_pass_sized_threads(tmp_path, checkout_with_search_flags):
    (tmp_path / "in.json").write_text(json.dumps({
        "name": "tiny", "modelSeeds": [1], "dialect": "alphafold3", "version": 1,
        "sequences": [{"protein": {"id": "A", "sequence": "MKTAYIAKQR"}}]}))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "af3.bin").write_bytes(b"not read by the stand-in")
    (tmp_path / "dbs").mkdir()
    common = ["--model-dir", tmp_path / "weights", "--db-dir", tmp_path / "dbs", "--af3-dir", checkout_with_search_flags, "--no-cache"]
    cores = cpu_info.usable_cores()  # what the CLI's process may use: same affinity, cgroup and environment
    sized = {name: search_threads.per_search(cores, search_threads.CONCURRENT_SEARCHES[name]) for name in NAMES}

    predict_args = ["predict", tmp_path / "in.json", "--output-dir", tmp_path / "out", "--num-diffusion-samples", "1",
                    "--quiet", *common, "--", "--jackhmmer_n_cpu=7"]
    assert _run(tmp_path, predict_args) == [{**sized, "jackhmmer_n_cpu": 7}]  # the user's flag after -- wins

    batch_args = ["batch", tmp_path / "in.json", "--output-dir", tmp_path / "batch", "--stage", "data", "--shard", "0/1", *common]
    assert _run(tmp_path, batch_args) == [sized]
    assert sized["jackhmmer_n_cpu"] * 4 <= max(cores, 4)  # AF3's default would be min(cores, 8) each
    assert list((tmp_path / "batch" / ".af3-cpu" / "chains").glob("*.json"))
