"""``af3-cpu batch`` on a real SLURM: the ``--print-sbatch`` array, dask-jobqueue's SLURMCluster, a walltime kill, a memory kill.

A one-node slurmctld + slurmd on 127.0.0.1 (``tests/slurm/local_slurm.py``)
runs for the session and the batches use the stand-in AF3.  The tests skip,
with the reason, where SLURM is not installed (``tests/slurm/install.sh``
installs Debian's) or its daemons do not start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from af3_cpu_patch.batch import layout, sizing
from tests.helpers import STANDIN_CHECKOUT
from tests.slurm.local_slurm import LocalSlurm, Unavailable
from tests.test_batch import assert_all_done, batch_dir, expected_tasks, loads, standin_env  # noqa: F401 - fixture

pytestmark = pytest.mark.xdist_group("slurm")  # one Slurm per test session: these tests share one test process


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


def job_env(slurm, tmp_path, **extra) -> dict:
    """What jobs inherit from ``sbatch`` (SLURM exports the submitter's environment): the stand-in, af3-cpu on PATH."""
    env = standin_env(tmp_path, **extra)
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    env["DASK_JOBQUEUE__SLURM__INTERFACE"] = "lo"  # scheduler and workers on 127.0.0.1 only
    return slurm.env(env)


def af3_cpu_batch(tmp_path, *args, env, timeout=600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "af3_cpu_patch", "batch", "--model-dir", str(tmp_path / "weights"), "--af3-dir",
           str(STANDIN_CHECKOUT), "--no-cache", "--max-memory", "100", "--no-run-data-pipeline", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


def sbatch_script(slurm, tmp_path, inputs, *args) -> pathlib.Path:
    proc = af3_cpu_batch(tmp_path, inputs, "--output-dir", tmp_path / "out", "--print-sbatch", *args, env=job_env(slurm, tmp_path))
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "af3.sbatch"
    path.write_text(proc.stdout)
    return path


def one_seed_each(batch_dir: pathlib.Path) -> None:
    """Two inputs of one seed each: two tasks (the stand-in takes tens of seconds a task on a loaded 2-core machine)."""
    for name in ("job0.json", "job2.json"):
        (batch_dir / "inputs" / name).unlink()


def job_logs(out: pathlib.Path, job: str) -> str:
    return "\n".join(p.read_text() for p in sorted((out / ".af3-cpu" / "logs").glob(f"af3-cpu-{job}_*.log")))


def test_sbatch_array_runs_the_batch_and_a_resubmission_does_nothing(slurm, batch_dir):  # noqa: F811 - fixture
    out = batch_dir / "out"
    one_seed_each(batch_dir)
    script = sbatch_script(slurm, batch_dir, batch_dir / "inputs", "--jobs", "2")
    text = script.read_text()
    assert re.search(r"^#SBATCH --time=\d\d:\d\d:00$", text, re.M) and re.search(r"^#SBATCH --mem=\d+G$", text, re.M), text
    env = job_env(slurm, batch_dir)
    job = slurm.sbatch(script, env=env, cwd=batch_dir)
    states = slurm.wait(job)
    assert states == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}, job_logs(out, job)
    assert_all_done(out, expected_tasks(batch_dir))
    assert sorted(loads(batch_dir).values()) == [1, 1], "each array task should build the model once"
    markers = [json.loads((layout.task_dir(out, t) / layout.DONE).read_text()) for t in expected_tasks(batch_dir)]
    assert len({m["pid"] for m in markers}) == 2

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "logs" not in p.parts and p.name != "batch_summary.json"}
    again = slurm.sbatch(script, env=env, cwd=batch_dir)
    assert set(slurm.wait(again).values()) == {"COMPLETED"}, job_logs(out, again)
    logs = job_logs(out, again)
    assert logs.count("0 task(s) and 0 data-pipeline chain(s) to run, 1 task(s) done before") == 2, logs
    assert sum(loads(batch_dir).values()) == 2, "the re-submission built a model"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "logs" not in p.parts
            and p.name != "batch_summary.json"} == before


@pytest.mark.skipif(importlib.util.find_spec("dask_jobqueue") is None, reason="needs the [dask] extra (dask-jobqueue)")
def test_dask_jobqueue_slurm_cluster_runs_the_batch(slurm, batch_dir):  # noqa: F811 - fixture
    out = batch_dir / "out"
    one_seed_each(batch_dir)
    known = set(slurm.states())
    proc = af3_cpu_batch(batch_dir, batch_dir / "inputs", "--output-dir", out, "--cluster", "slurm", "--cores", "1",
                         "--jobs", "2", env=job_env(slurm, batch_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_all_done(out, expected_tasks(batch_dir))
    assert "SLURM via dask-jobqueue, up to 2 job(s)" in json.loads((out / "batch_summary.json").read_text())["engine"]
    memory = re.search(r"--mem (\d+)GB: the largest task's memory forecast", proc.stderr)
    walltime = re.search(r"--time (\d\d:\d\d:00): the longest job share forecast", proc.stderr)
    assert memory and walltime, proc.stderr
    worker_jobs = set(slurm.states()) - known
    assert 1 <= len(worker_jobs) <= 2, worker_jobs  # the tasks ran in workers that SLURM started
    for job in worker_jobs:  # each asked for the forecasts
        shown = slurm.run("scontrol", "show", "job", job).stdout
        assert f"MinMemoryNode={memory.group(1)}G" in shown and f"TimeLimit={walltime.group(1)}" in shown, shown
    worker_log = next(batch_dir.glob("slurm-*.out"), None)
    assert worker_log is not None, "no worker job wrote its log"
    built = loads(batch_dir)  # a worker builds the model at its first task; one that came late may have had none
    assert 1 <= len(built) <= len(worker_jobs) and set(built.values()) == {1}, built
    slurm.wait(",".join(sorted(worker_jobs)), timeout=60)  # cancelled when the batch closed its cluster


def test_a_job_killed_at_its_walltime_resumes_cleanly(slurm, batch_dir):  # noqa: F811 - fixture
    out = batch_dir / "out"
    tasks = [t for t in expected_tasks(batch_dir) if t.job == "job1"]
    script = sbatch_script(slurm, batch_dir, batch_dir / "inputs" / "job1.json", "--walltime", "00:01:00")
    assert "#SBATCH --time=00:01:00\n" in script.read_text()
    job = slurm.sbatch(script, env=job_env(slurm, batch_dir, STANDIN_PREDICT_SECONDS="300"), cwd=batch_dir)
    assert slurm.wait(job, timeout=240) == {f"{job}_0": "TIMEOUT"}, job_logs(out, job)
    assert len(loads(batch_dir)) == 1, "the task should have been running when the walltime came"
    visible = [p.name for p in (out / "job1").iterdir() if not p.name.startswith(".")] if (out / "job1").exists() else []
    assert visible == [], visible
    assert not any(layout.is_done(out, t) for t in tasks)

    again = slurm.sbatch(script, env=job_env(slurm, batch_dir), cwd=batch_dir)
    assert slurm.wait(again) == {f"{again}_0": "COMPLETED"}, job_logs(out, again)
    assert_all_done(out, tasks)
    logs = job_logs(out, again)
    assert "1 task(s) and 0 data-pipeline chain(s) to run, 0 task(s) done before" in logs, logs


def test_an_array_task_killed_for_memory_runs_once_more_with_more_memory(slurm, batch_dir):  # noqa: F811 - fixture
    out = batch_dir / "out"
    tasks = [t for t in expected_tasks(batch_dir) if t.job == "job1"]
    script = sbatch_script(slurm, batch_dir, batch_dir / "inputs" / "job1.json", "--memory", "2GB")
    retry_mb = sizing.retry_memory_gb("2GB") * 1024
    assert f"--mem={retry_mb // 1024}G " in script.read_text()

    def submit(needs_mb: int) -> dict[str, str]:
        known = set(slurm.states())
        job = slurm.sbatch(script, env=job_env(slurm, batch_dir, STANDIN_NEEDS_SLURM_MEM_MB=str(needs_mb)), cwd=batch_dir)
        slurm.wait(job)
        new = ",".join(sorted(set(slurm.states()) - known))
        return slurm.wait(new)

    # Needs more than the job has, less than the retry's: the first job is killed, the retry finishes the task.
    states = submit(retry_mb)
    assert sorted(states.values()) == ["COMPLETED", "FAILED"], states
    assert_all_done(out, tasks)
    # Needs more than either: the retry is killed too, and nothing is submitted a third time.
    for task in tasks:
        layout.task_dir(out, task).joinpath(layout.DONE).unlink()
    states = submit(retry_mb + 1)
    assert sorted(states.values()) == ["FAILED", "FAILED"], states
