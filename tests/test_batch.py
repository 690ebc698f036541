"""``af3-cpu batch`` on the stand-in AF3: planning, shards, resume, failures, Dask engines.

Batches run as ``af3-cpu`` subprocesses (each worker imports the stand-in
AF3, whose model construction and predictions are slowed and logged through
``STANDIN_*`` variables).  Tests of the Dask engines skip without the
``[dask]`` extra.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from af3_cpu_patch.batch import engines, layout, plan
from tests.helpers import ROOT, STANDIN, STANDIN_CHECKOUT, standin_checkout_without_output_terms

needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs the [dask] extra (distributed)")
needs_jobqueue = pytest.mark.skipif(importlib.util.find_spec("dask_jobqueue") is None, reason="needs the [dask] extra (dask-jobqueue)")

SEQUENCES = ["MKTAYIAKQR", "GSHMLEDPV", "MKTAYIAKQRQISFVKSHF", "PEPTIDEKLMN"]


def fold_input(name, sequences, seeds=(1,), msa=True):
    chains = []
    for index, sequence in enumerate(sequences):
        chain = {"id": "ABCDEFGH"[index], "sequence": sequence}
        if msa:
            chain.update(unpairedMsa="", pairedMsa="", templates=[])
        chains.append({"protein": chain})
    return {"name": name, "modelSeeds": list(seeds), "dialect": "alphafold3", "version": 1, "sequences": chains}


@pytest.fixture
def batch_dir(tmp_path):
    """Four inputs (two seeds each on two of them) and stand-in weights."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for index, sequence in enumerate(SEQUENCES):
        seeds = (1, 2) if index % 2 == 0 else (3,)
        (inputs / f"job{index}.json").write_text(json.dumps(fold_input(f"job{index}", [sequence], seeds)))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "af3.bin").write_bytes(b"not read by the stand-in")
    return tmp_path


def standin_env(tmp_path, **extra) -> dict:
    """Environment of a process that imports the stand-in AF3 and logs its model loads and data searches."""
    env = {k: v for k, v in os.environ.items() if k not in ("AF3_CPU_PATCH", "AF3_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(STANDIN), str(ROOT)])
    env["STANDIN_LOAD_LOG"] = str(tmp_path / "loads.log")
    env["STANDIN_DATA_LOG"] = str(tmp_path / "data.log")
    return {**env, **extra}


def run_snippet(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=standin_env(pathlib.Path(str(args[0])).parent))


def batch_cli(tmp_path, *args, env=None, wait=True, timeout=600):
    full_env = standin_env(tmp_path, **(env or {}))
    cmd = [sys.executable, "-m", "af3_cpu_patch", "batch", "--model-dir", str(tmp_path / "weights"),
           "--af3-dir", str(STANDIN_CHECKOUT), "--no-cache", "--max-memory", "100", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def loads(tmp_path) -> collections.Counter:
    log = tmp_path / "loads.log"
    return collections.Counter(log.read_text().split()) if log.exists() else collections.Counter()


def expected_tasks(batch_dir):
    return plan.make_plan(plan.input_files([batch_dir / "inputs"]), None, False).tasks


def assert_all_done(out, tasks):
    for task in tasks:
        seed_dir = layout.task_dir(out, task)
        assert (seed_dir / layout.DONE).is_file(), task.key
        assert list(seed_dir.glob(f"seed-{task.seed}_sample-*/*_model.xyz")), task.key
    for job in {t.job for t in tasks}:
        merged = json.loads((out / job / layout.MERGED).read_text())
        seeds = sorted(t.seed for t in tasks if t.job == job)
        assert merged["seeds"] == seeds
        ranking = (out / job / f"{job}_ranking_scores.csv").read_text().splitlines()
        assert {int(line.split(",")[0]) for line in ranking[1:]} == set(seeds)
        best = max(ranking[1:], key=lambda line: float(line.split(",")[2]))
        assert merged["best"]["seed"] == int(best.split(",")[0])
        assert (out / job / f"{job}_model.xyz").is_file()
    assert not list(out.glob(f"*/{layout.STAGING_MARK}*")), "a staging folder was left behind"


# --- planning -----------------------------------------------------------------------------------

def test_shards_cover_every_task_exactly_once(batch_dir):
    full = plan.make_plan(plan.input_files([batch_dir / "inputs"]), None, False)
    assert len(full.tasks) == 6
    for count in (1, 2, 3, 4, 7):
        keys = [t.key for i in range(count) for t in full.shard(i, count)]
        assert sorted(keys) == sorted(t.key for t in full.tasks)
        assert len(keys) == len(set(keys))
    buckets = [t.bucket for t in full.tasks]
    assert buckets == sorted(buckets)


def test_identical_chains_get_one_data_task(tmp_path):
    files = []
    for name, sequences in (("a", ["MKTAYIAKQR", "GSHMLEDPV"]), ("b", ["MKTAYIAKQR"]), ("c", ["GSHMLEDPV", "PEPTIDE"])):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(fold_input(name, sequences, msa=False)))
    given = fold_input("d", ["MKTAYIAKQR"], msa=True)
    files.append(tmp_path / "d.json")
    files[-1].write_text(json.dumps(given))
    made = plan.make_plan(files, None, run_data_pipeline=True)
    assert sorted(c.sequence for c in made.chains) == ["GSHMLEDPV", "MKTAYIAKQR", "PEPTIDE"]
    assert next(t for t in made.tasks if t.job == "d").chains == ()
    assert plan.make_plan(files, None, run_data_pipeline=False).chains == []


def test_bad_inputs_are_rejected_by_file(tmp_path):
    (tmp_path / "ok.json").write_text(json.dumps(fold_input("ok", ["MKT"])))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "noseeds.json").write_text(json.dumps({**fold_input("x", ["MKT"]), "modelSeeds": []}))
    (tmp_path / "dup.json").write_text(json.dumps(fold_input("OK", ["MKT"])))
    made = plan.make_plan(plan.input_files([tmp_path]), None, False)
    # Files are read in name order: dup.json's "OK" comes first, ok.json's "ok" would share its folder.
    assert [t.job for t in made.tasks] == ["OK"]
    assert {pathlib.Path(p).name for p in made.rejected} == {"broken.json", "noseeds.json", "ok.json"}
    assert "output folder 'ok'" in made.rejected[str(tmp_path / "ok.json")]
    assert "modelSeeds" in made.rejected[str(tmp_path / "noseeds.json")]


# --- shards: no service ---------------------------------------------------------------------------

def test_shards_run_the_batch_and_a_rerun_does_no_work(batch_dir):
    out = batch_dir / "out"
    for shard in ("0/2", "1/2"):
        proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", out, "--no-run-data-pipeline", "--shard", shard)
        assert proc.returncode == 0, proc.stderr
    assert_all_done(out, expected_tasks(batch_dir))
    assert sorted(loads(batch_dir).values()) == [1, 1], "each shard process should build the model once"
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["engine"] == "shard 1/2"

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "batch_summary.json"}
    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", out, "--no-run-data-pipeline")
    assert proc.returncode == 0, proc.stderr
    assert sum(loads(batch_dir).values()) == 2, "a re-run loaded the model"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "batch_summary.json"} == before
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["counts"]["skipped_done_before"] == 6 and summary["counts"]["done"] == 0

    # An input edited since its result was made is run again; the others stay done.
    (batch_dir / "inputs" / "job1.json").write_text(json.dumps(fold_input("job1", ["GSHMLEDPVK"], (3,))))
    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", out, "--no-run-data-pipeline", "--shard", "0/1")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["counts"]["skipped_done_before"] == 5 and summary["counts"]["done"] == 1
    assert [t["task"] for t in summary["tasks"] if not t.get("skipped")] == ["job1/seed-3"]


def test_a_failing_input_is_recorded_and_the_rest_finish(batch_dir):
    (batch_dir / "inputs" / "zz.json").write_text(json.dumps(fold_input("fail_me", ["MKT"])))
    out = batch_dir / "out"
    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", out, "--no-run-data-pipeline", "--shard", "0/1")
    assert proc.returncode == 1
    failure = json.loads((out / "fail_me" / "seed-1.failed.json").read_text())
    assert "stand-in rejects input" in failure["error"]
    assert not (out / "fail_me" / "seed-1").exists()
    assert_all_done(out, [t for t in expected_tasks(batch_dir) if t.job != "fail_me"])
    assert "fail_me/seed-1" in proc.stdout and "failed" in proc.stdout
    assert "Traceback" not in proc.stderr


CRASH_BEFORE_RENAME = """
import os, pathlib, sys
from af3_cpu_patch.batch import layout, runner, worker
layout.publish = lambda *args, **kwargs: os._exit(3)  # the process dies between the write and the rename
out = pathlib.Path(sys.argv[1])
settings = worker.BatchOptions(output_dir=out, model_dir=pathlib.Path(sys.argv[3]), af3_dir=sys.argv[4], cache_dir=None)
runner.run(runner.Request(inputs=[pathlib.Path(sys.argv[2])], settings=settings, run_data_pipeline=False, shard=(0, 1)))
"""


def test_a_crash_before_the_rename_leaves_no_visible_output(batch_dir):
    out = batch_dir / "out"
    proc = run_snippet(CRASH_BEFORE_RENAME, out, batch_dir / "inputs" / "job0.json", batch_dir / "weights", STANDIN_CHECKOUT)
    assert proc.returncode == 3, proc.stderr
    visible = [p for p in (out / "job0").iterdir() if not p.name.startswith(".")]
    assert visible == [], visible
    assert list((out / "job0").glob(f"{layout.STAGING_MARK}*")), "the crash should have left its staging folder"

    proc = batch_cli(batch_dir, batch_dir / "inputs" / "job0.json", "--output-dir", out, "--no-run-data-pipeline", "--shard", "0/1")
    assert proc.returncode == 0, proc.stderr
    assert "removed 1 unfinished temporary folder" in proc.stderr
    assert_all_done(out, [t for t in expected_tasks(batch_dir) if t.job == "job0"])


def test_data_stage_once_per_distinct_chain_then_inference(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name, sequences in (("a", ["MKTAYIAKQR", "GSHMLEDPV"]), ("b", ["MKTAYIAKQR"]), ("c", ["GSHMLEDPV"])):
        (inputs / f"{name}.json").write_text(json.dumps(fold_input(name, sequences, msa=False)))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "af3.bin").write_bytes(b"x")
    (tmp_path / "dbs").mkdir()
    out = tmp_path / "out"
    proc = batch_cli(tmp_path, inputs, "--output-dir", out, "--db-dir", tmp_path / "dbs", "--stage", "data", "--shard", "0/1")
    assert proc.returncode == 0, proc.stderr
    assert sorted((tmp_path / "data.log").read_text().split()) == ["GSHMLEDPV", "MKTAYIAKQR"]
    assert not loads(tmp_path), "the data stage built the model"
    assert not list(out.glob("*/seed-*"))

    proc = batch_cli(tmp_path, inputs, "--output-dir", out, "--db-dir", tmp_path / "dbs", "--stage", "infer", "--shard", "0/1")
    assert proc.returncode == 0, proc.stderr
    assert sorted((tmp_path / "data.log").read_text().split()) == ["GSHMLEDPV", "MKTAYIAKQR"], "inference re-ran the data pipeline"
    data = json.loads(next((out / "a" / "seed-1").glob("*_data.json")).read_text())
    assert [s["protein"]["unpairedMsa"] for s in data["sequences"]] == [">query\nMKTAYIAKQR\n", ">query\nGSHMLEDPV\n"]
    for job in "abc":
        assert (out / job / "seed-1" / layout.DONE).is_file()


def test_print_sbatch(batch_dir):
    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", batch_dir / "out", "--print-sbatch", "--jobs", "4",
                     "--cores", "8", "--memory", "32GB", "--walltime", "12:00:00", "--queue", "cpu", "--", "--save_embeddings=true")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert script.startswith("#!/bin/bash")
    for line in ("#SBATCH --array=0-3", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --time=12:00:00", "#SBATCH --partition=cpu"):
        assert line in script
    command = script.strip().splitlines()[-1]
    assert re.search(r'--shard "\$\{SLURM_ARRAY_TASK_ID\}/4" -- --save_embeddings=true$', command), command
    assert str((batch_dir / "inputs").resolve()) in command and "--print-sbatch" not in command and "--jobs" not in command
    assert (batch_dir / "out" / ".af3-cpu" / "logs").is_dir()


def test_one_line_errors(batch_dir):
    proc = batch_cli(batch_dir, batch_dir / "nope", "--output-dir", batch_dir / "out", "--no-run-data-pipeline")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", batch_dir / "out", "--no-run-data-pipeline", "--shard", "2/2")
    assert proc.returncode == 2 and "--shard 2/2" in proc.stderr and "Traceback" not in proc.stderr


def test_af3_package_without_output_terms_is_refused_before_any_task(batch_dir):
    checkout = standin_checkout_without_output_terms(batch_dir)
    env = {"PYTHONPATH": os.pathsep.join([str(checkout / "src"), str(ROOT)])}
    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", batch_dir / "out", "--no-run-data-pipeline",
                     "--shard", "0/1", "--af3-dir", checkout, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "has no OUTPUT_TERMS_OF_USE.md" in proc.stderr, proc.stderr
    assert not loads(batch_dir) and not (batch_dir / "out").exists()


# --- Dask ------------------------------------------------------------------------------------------

@needs_dask
def test_local_cluster_runs_the_batch_each_worker_loads_once(batch_dir):
    out = batch_dir / "out"
    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", out, "--no-run-data-pipeline", "--workers", "2",
                     env={"STANDIN_LOAD_SECONDS": "2"})
    assert proc.returncode == 0, proc.stderr
    assert_all_done(out, expected_tasks(batch_dir))
    counts = loads(batch_dir)
    assert 1 <= len(counts) <= 2 and set(counts.values()) == {1}, counts
    assert "local Dask cluster, 2 worker(s)" in proc.stderr
    markers = [json.loads((layout.task_dir(out, t) / layout.DONE).read_text()) for t in expected_tasks(batch_dir)]
    assert {m["models_built_in_process"] for m in markers} == {1}

    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", out, "--no-run-data-pipeline", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert loads(batch_dir) == counts, "a re-run loaded the model"
    assert "nothing left to do" in json.loads((out / "batch_summary.json").read_text())["engine"]


@needs_dask
def test_a_killed_worker_is_replaced_and_the_batch_completes(batch_dir):
    out = batch_dir / "out"
    proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", out, "--no-run-data-pipeline", "--workers", "1",
                     env={"STANDIN_PREDICT_SECONDS": "3"}, wait=False)
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for folder in out.glob(f"*/{layout.STAGING_MARK}*"):
            victim = int(folder.name.rsplit("-", 2)[-2])
            break
        time.sleep(0.2)
    assert victim is not None, "no task started"
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert_all_done(out, expected_tasks(batch_dir))
    assert len(loads(batch_dir)) == 2, "the replacement worker should have loaded the model once more"


@needs_dask
def test_scheduler_file_and_preloaded_workers_started_apart(batch_dir):
    scheduler_file = batch_dir / "scheduler.json"
    env = standin_env(batch_dir)
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen([*dask, "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                                   "--nthreads", "1", "--preload", engines.PRELOAD, "--resources", f"{engines.MEMORY_RESOURCE}=20",
                                   "--host", "127.0.0.1", "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            out = batch_dir / "out"
            proc = batch_cli(batch_dir, batch_dir / "inputs", "--output-dir", out, "--no-run-data-pipeline",
                             "--scheduler-file", scheduler_file)
            assert proc.returncode == 0, proc.stderr
            assert_all_done(out, expected_tasks(batch_dir))
            assert list(loads(batch_dir).values()) == [1]
            assert "Dask scheduler tcp://127.0.0.1" in proc.stderr
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=60)


@needs_jobqueue
@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_job_scripts(kind):
    options = engines.ClusterOptions(cluster=kind, jobs=3, cores=16, memory="64GB", walltime="02:00:00", queue="cpu", account="lab")
    cluster, capacity = engines.jobqueue_cluster(options, scheduler_host="127.0.0.1")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert f"--preload {engines.PRELOAD}" in script
    assert f"--resources {engines.MEMORY_RESOURCE}=" in script and 55 < capacity < 64
    lifetime = int(re.search(r"--lifetime (\d+)s", script).group(1))
    assert 0 < lifetime < 2 * 3600 and "--lifetime-restart" in script
    assert "02:00:00" in script and "export JAX_PLATFORMS=cpu" in script
    if kind == "slurm":
        assert "#SBATCH --cpus-per-task=16" in script and "#SBATCH -p cpu" in script and "#SBATCH -A lab" in script
    else:
        assert "#PBS -q cpu" in script and "#PBS -A lab" in script and "ncpus=16" in script


def test_worker_lifetime_stays_under_the_walltime():
    for walltime in ("00:30:00", "02:00:00", "1-00:00:00", "45:00"):
        lifetime, stagger = engines.worker_lifetime(walltime)
        assert int(lifetime[:-1]) + int(stagger[:-1]) < engines.walltime_seconds(walltime)


def test_tasks_forecast_above_max_memory_are_recorded_not_run(batch_dir):
    out = batch_dir / "out"
    proc = batch_cli(batch_dir, batch_dir / "inputs" / "job1.json", "--output-dir", out, "--no-run-data-pipeline",
                     "--shard", "0/1", "--max-memory", "2")
    assert proc.returncode == 1
    failure = json.loads((out / "job1" / "seed-3.failed.json").read_text())
    assert "more than the 2 GB a worker has" in failure["error"]
    assert not loads(batch_dir), "a task that cannot fit was started"


WITHOUT_DASK = """
import pathlib, sys
from af3_cpu_patch.batch import engines, runner, worker
engines.have_dask = lambda: False  # as if the [dask] extra were not installed
settings = worker.BatchOptions(output_dir=pathlib.Path(sys.argv[1]), model_dir=pathlib.Path(sys.argv[3]), af3_dir=sys.argv[4], cache_dir=None)
summary = runner.run(runner.Request(inputs=[pathlib.Path(sys.argv[2])], settings=settings, run_data_pipeline=False, max_memory="none"))
print(summary["engine"])
"""


def test_without_dask_a_local_batch_runs_in_this_process(batch_dir):
    out = batch_dir / "out"
    proc = run_snippet(WITHOUT_DASK, out, batch_dir / "inputs", batch_dir / "weights", STANDIN_CHECKOUT)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "Dask is not installed" in line]
    assert len(notes) == 1 and "pip install 'af3-cpu-patch[dask]'" in notes[0]
    assert proc.stdout.strip().splitlines()[-1] == "this process (no Dask)"
    assert_all_done(out, expected_tasks(batch_dir))


# --- stops and failure classes ---------------------------------------------------------------------------

def _wait_for(proc, pattern_dir: pathlib.Path, pattern: str, timeout: float = 300) -> None:
    """Wait until ``pattern`` matches under ``pattern_dir`` while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while not list(pattern_dir.glob(pattern)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{pattern} never appeared:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.1)


def test_a_task_stopped_by_sigterm_is_recorded_interrupted_and_a_rerun_finishes_it(batch_dir):
    out = batch_dir / "out"
    job0 = batch_dir / "inputs" / "job0.json"  # seeds 1 and 2
    args = [job0, "--output-dir", out, "--no-run-data-pipeline", "--shard", "0/1"]
    proc = batch_cli(batch_dir, *args, env={"STANDIN_PREDICT_SECONDS": "600"}, wait=False)
    _wait_for(proc, out, f"job0/{layout.STAGING_MARK}*/af3/job0/job0_data.json")  # the first task is in inference
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # as SLURM at the walltime, or scancel
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert time.monotonic() - start < 30  # the prediction had 600 s to go
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("af3-cpu: interrupted by SIGTERM; 2 task(s) recorded as interrupted, 0 done in this run"), stderr[-3000:]
    assert "Traceback" not in stderr
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["counts"]["interrupted"] == 2 and summary["counts"]["failed"] == 0
    assert {t["task"]: t["status"] for t in summary["tasks"]} == {"job0/seed-1": "interrupted", "job0/seed-2": "interrupted"}
    assert not list(out.rglob("*.failed.json")), "an interrupted task was recorded as failed"
    assert not list(out.glob(f"*/{layout.STAGING_MARK}*")), "the interrupted task's staging folder was left"

    proc = batch_cli(batch_dir, *args)
    assert proc.returncode == 0, proc.stderr
    assert_all_done(out, [t for t in expected_tasks(batch_dir) if t.job == "job0"])
    assert json.loads((out / "batch_summary.json").read_text())["counts"]["done"] == 2


def test_a_valueerror_from_inside_inference_is_retried(batch_dir):
    out = batch_dir / "out"
    once = batch_dir / "failed-once"
    proc = batch_cli(batch_dir, batch_dir / "inputs" / "job1.json", "--output-dir", out, "--no-run-data-pipeline",
                     "--shard", "0/1", "--retries", "1", env={"STANDIN_INFERENCE_ERROR": str(once)})
    assert proc.returncode == 0, proc.stderr
    assert "job1/seed-3: attempt 1 failed: ValueError: stand-in inference failed on this try" in proc.stderr
    assert once.exists()
    assert_all_done(out, [t for t in expected_tasks(batch_dir) if t.job == "job1"])
    assert not (out / "job1" / "seed-3.failed.json").exists()


def test_an_input_af3s_loader_rejects_is_not_retried(batch_dir):
    bad = batch_dir / "inputs" / "empty.json"
    bad.write_text(json.dumps({**fold_input("empty", ["MKT"]), "sequences": []}))  # planned, but AF3's loader refuses it
    out = batch_dir / "out"
    proc = batch_cli(batch_dir, bad, "--output-dir", out, "--no-run-data-pipeline", "--shard", "0/1")
    assert proc.returncode == 1, proc.stderr
    error = json.loads((out / "empty" / "seed-1.failed.json").read_text())["error"]
    assert error.startswith(f"AF3 rejected the input {bad}: ") and "'sequences'" in error, error
    assert "attempt" not in proc.stderr, "a rejected input was retried"
    assert not loads(batch_dir), "AF3's main() ran on an input its loader rejects"


def test_a_task_result_and_its_marker_arrive_by_one_rename(tmp_path, monkeypatch):
    task = plan.Task("job", 1, "in.json", 0, 10, 16, 1.0, digest="abc")
    destination = layout.task_dir(tmp_path, task)
    destination.mkdir(parents=True)
    (destination / "old.txt").write_text("an unmarked result being redone")
    source = tmp_path / "staging" / "job"
    (source / "seed-1_sample-0").mkdir(parents=True)
    for index in range(10):
        (source / "seed-1_sample-0" / f"part{index}.txt").write_text(str(index))
    real_rename, renames = os.rename, []

    def rename(src, dst):
        src, dst = pathlib.Path(src), pathlib.Path(dst)
        if dst == destination:
            assert not destination.exists() and (src / layout.DONE).is_file(), "result and marker must arrive together"
        real_rename(src, dst)
        renames.append(dst)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a task's result must be renamed into place, not copied: {args}")

    monkeypatch.setattr(os, "rename", rename)
    for name in ("move", "copy", "copy2", "copyfile", "copytree"):
        monkeypatch.setattr(shutil, name, forbidden)
    layout.publish(source, destination, {"input_digest": "abc"})
    assert len(renames) == 2 and renames[-1] == destination  # the old result aside, then the new one in place
    assert layout.is_done(tmp_path, task)
    assert sorted(p.name for p in (destination / "seed-1_sample-0").iterdir()) == sorted(f"part{i}.txt" for i in range(10))
    assert not (destination / "old.txt").exists()
    assert not list(destination.parent.glob(f"{layout.STAGING_MARK}*")), "the replaced result was left aside"
