"""Stops by signal: SIGTERM, SIGINT and SIGHUP clean up, and no signal splits the final rename.

In-process tests drive :mod:`af3_cpu_patch.host.stops` and ``predict.staged_output``
with ``signal.raise_signal`` (a fixture installs this process's own handlers
first, so a guard that failed to install cannot kill pytest, and checks they
come back).  Subprocess tests stop a real ``af3-cpu predict`` of the stand-in
AF3, slowed in Python (``time.sleep``) or in native code that Python signal
handlers cannot interrupt (as XLA's).
"""

from __future__ import annotations

import errno
import glob
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from af3_cpu_patch import predict
from af3_cpu_patch.host import stops
from tests.helpers import ROOT, STANDIN, STANDIN_CHECKOUT


class Escaped(Exception):
    """A signal reached this test's own handler: the guard did not take it."""


@pytest.fixture
def own_handlers():
    """This test's handlers for the three signals for the test's duration; the handler is returned."""

    def handler(signum, frame):
        raise Escaped(signum)

    saved = {signum: signal.getsignal(signum) for signum in stops.SIGNALS}
    for signum in stops.SIGNALS:
        signal.signal(signum, handler)
    yield handler
    for signum, previous in saved.items():
        signal.signal(signum, previous)


def _wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def _signal_self(signum: int) -> None:
    """Send ``signum`` to this process and give the main thread's handler the chance to run."""
    signal.raise_signal(signum)
    time.sleep(0.05)


# --- the guard ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", stops.SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_in_a_run_raises_a_stop_and_the_handlers_come_back(own_handlers, signum):
    fd_before = _wakeup_fd()
    with pytest.raises(stops.Stopped) as stopped:
        with stops.guard():
            assert signal.getsignal(signum) is not own_handlers
            _signal_self(signum)
            time.sleep(2)
    assert stopped.value.signum == signum and stopped.value.exit_code == 128 + signum
    assert all(signal.getsignal(s) is own_handlers for s in stops.SIGNALS)
    assert _wakeup_fd() == fd_before


def test_handlers_come_back_after_a_run_that_failed(own_handlers):
    with pytest.raises(ZeroDivisionError):
        with stops.guard():
            1 / 0
    assert all(signal.getsignal(s) is own_handlers for s in stops.SIGNALS)
    with pytest.raises(Escaped):  # and they are the ones that run
        _signal_self(signal.SIGTERM)


def test_a_signal_during_the_critical_block_waits_for_its_end(own_handlers):
    steps = []
    with pytest.raises(stops.Stopped) as stopped:
        with stops.guard():
            with stops.critical():
                _signal_self(signal.SIGINT)
                steps.append("rename 1")
                _signal_self(signal.SIGINT)  # Ctrl-C again
                steps.append("rename 2")
            steps.append("after the block")
    assert steps == ["rename 1", "rename 2"]
    assert stopped.value.signum == signal.SIGINT


def test_a_second_signal_does_not_cut_the_cleanup_short(own_handlers):
    cleaned = []
    with pytest.raises(stops.Stopped) as stopped:
        with stops.guard():
            try:
                _signal_self(signal.SIGTERM)
                time.sleep(2)
            finally:
                _signal_self(signal.SIGINT)
                cleaned.append("staging removed")
    assert cleaned == ["staging removed"]
    assert stopped.value.signum == signal.SIGTERM  # the first signal's exit code


def test_no_critical_block_starts_after_a_stop(own_handlers):
    published = []
    with pytest.raises(stops.Stopped):
        with stops.guard():
            try:
                _signal_self(signal.SIGTERM)
                time.sleep(2)
            except BaseException:  # noqa: BLE001 - code that swallows the stop
                pass
            with stops.critical():
                published.append("result")
    assert published == []


def test_a_wrapped_stop_still_ends_the_run_as_a_stop(own_handlers):
    with pytest.raises(stops.Stopped) as stopped:
        with stops.guard():
            try:
                _signal_self(signal.SIGHUP)
                time.sleep(2)
            except stops.Stopped as exc:  # as JAX wraps an exception raised inside a host callback
                raise RuntimeError("INTERNAL: CpuCallback error") from exc
    assert stopped.value.signum == signal.SIGHUP and isinstance(stopped.value.__cause__, RuntimeError)


def test_a_signal_ignored_before_the_run_stays_ignored(own_handlers):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    with stops.guard():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        _signal_self(signal.SIGHUP)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_outside_the_main_thread_a_guard_changes_nothing(own_handlers):
    seen = []

    def body():
        with stops.guard():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [own_handlers]


# --- the watcher: a main thread stuck in native code --------------------------------------------------------

STUCK = """
import contextlib, hashlib, pathlib, sys, time
from af3_cpu_patch.host import stops

marker, seconds = pathlib.Path(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
hashlib.pbkdf2_hmac("sha256", b"x", b"y", 20000)
rounds = min(int(seconds / max((time.monotonic() - start) / 20000, 1e-9)), 2**31 - 1)  # a C int

def remove_staging(stop):
    marker.write_text(stop.name)
    return "the staging folder was removed"

try:
    with stops.guard(), stops.on_stop(remove_staging):
        with (stops.critical() if sys.argv[3] == "critical" else contextlib.nullcontext()):
            print("ready", flush=True)
            hashlib.pbkdf2_hmac("sha256", b"x", b"y", rounds)  # native code: no signal handler runs until it returns
            pathlib.Path(sys.argv[1] + ".published").write_text("whole")
        time.sleep(60)
except stops.Stopped as stop:  # as the CLI ends a stopped run
    print(stops.PREFIX + stop.message(), file=sys.stderr, flush=True)
    sys.exit(stop.exit_code)
print("not stopped", flush=True)
"""


def _stuck(tmp_path, seconds: float, block: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(tmp_path / "marker"), str(seconds), block],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_signals)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # inside the native call by now
    return proc


def test_a_run_stuck_in_native_code_is_ended_by_the_watcher(tmp_path):
    proc = _stuck(tmp_path, 3600, "none")
    try:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert time.monotonic() - start < stops.GRACE + 20
    assert err.strip().splitlines() == ["af3-cpu: interrupted by SIGTERM; the staging folder was removed"]
    assert (tmp_path / "marker").read_text() == "SIGTERM"
    assert not (tmp_path / "marker.published").exists()


def test_the_watcher_waits_for_a_critical_block(tmp_path):
    proc = _stuck(tmp_path, stops.GRACE + 3, "critical")  # stuck in native code longer than the grace, inside the block
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert (tmp_path / "marker.published").read_text() == "whole"  # not ended inside the block, though stuck past the grace
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("af3-cpu: interrupted by SIGINT"), err


# --- predict: the staging folder and the final renames ----------------------------------------------------

def _job(staging: pathlib.Path, name: str) -> list[pathlib.Path]:
    """A job folder as AF3 writes one (samples, top-level files); returns its contents."""
    job = staging / name
    (job / "seed-1_sample-0").mkdir(parents=True)
    for index in range(20):
        (job / "seed-1_sample-0" / f"part{index}.txt").write_text(str(index))
    (job / f"{name}_model.cif").write_text("model")
    return sorted(p.relative_to(job) for p in job.rglob("*"))


def _contents(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def _forbidden(*args, **kwargs):
    raise AssertionError(f"a result must reach its place by renaming its job folder, not by {args}")


def test_each_job_folder_is_published_by_one_rename(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)  # an earlier run's: the new one gets AF3's _<timestamp> suffix
    real_rename = os.rename
    renames = []

    def rename(src, dst):
        src, dst = pathlib.Path(src), pathlib.Path(dst)
        assert not dst.exists(), f"{dst} was visible before its rename"
        real_rename(src, dst)
        renames.append((src.name, dst.relative_to(out).as_posix()))

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", _forbidden)
    for name in ("move", "copy", "copy2", "copyfile", "copytree"):
        monkeypatch.setattr(shutil, name, _forbidden)
    with predict.staged_output(out) as staging:
        written = {name: _job(staging, name) for name in ("a", "b")}
    assert [src for src, _ in renames] == ["a", "b"]
    assert re.fullmatch(r"a_\d{8}_\d{6}", renames[0][1]) and renames[1][1] == "b"
    for src, dst in renames:
        assert _contents(out / dst) == written[src]
    assert _contents(out / "a") == []  # the earlier run's folder is left alone
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_a_ctrl_c_during_publication_waits_for_every_job_folder(tmp_path, monkeypatch, own_handlers):
    out = tmp_path / "out"
    real_rename = os.rename

    def rename_then_ctrl_c(src, dst):
        real_rename(src, dst)
        _signal_self(signal.SIGINT)  # after every folder: the first Ctrl-C and the user's repeats

    monkeypatch.setattr(os, "rename", rename_then_ctrl_c)
    with pytest.raises(stops.Stopped) as stopped:
        with stops.guard(), predict.staged_output(out) as staging:
            written = {name: _job(staging, name) for name in ("a", "b", "c")}
    for name, contents in written.items():
        assert _contents(out / name) == contents
    assert stopped.value.exit_code == 130
    assert stopped.value.message() == f"interrupted by SIGINT; kept the finished job folder(s) a, b, c in {out}; nothing else was written"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_rename_takes_back_the_others(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_rename = os.rename

    def rename(src, dst):
        if pathlib.Path(src).name == "b":
            raise OSError(errno.EACCES, "Permission denied", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        with predict.staged_output(out) as staging:
            _job(staging, "a")
            _job(staging, "b")
    assert list(tmp_path.iterdir()) == []  # neither job folder, nor the output folder it created, nor the staging


# --- predict on the stand-in AF3, stopped mid-run ---------------------------------------------------------

def _default_signals():
    """In the child: default dispositions, so a test run in the background (SIGINT ignored) still tests SIGINT."""
    for signum in stops.SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def _start_predict(tmp_path, out, **env):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "af3.bin").write_bytes(b"not read by the stand-in")
    (tmp_path / "in.json").write_text('{"name": "tiny", "modelSeeds": [1], "dialect": "alphafold3", "version": 1, "sequences": '
                                      '[{"protein": {"id": "A", "sequence": "MKTAYIAKQR", "unpairedMsa": "", "pairedMsa": "", "templates": []}}]}')
    full_env = {k: v for k, v in os.environ.items() if k not in ("AF3_CPU_PATCH", "AF3_DIR")}
    full_env.update(PYTHONPATH=os.pathsep.join([str(STANDIN), str(ROOT)]), XDG_CACHE_HOME=str(tmp_path / "cache"),
                    JAX_PLATFORMS="cpu", STANDIN_PREDICT_SECONDS="600", **env)
    cmd = [sys.executable, "-m", "af3_cpu_patch", "predict", tmp_path / "in.json", "--model-dir", tmp_path / "weights",
           "--output-dir", out, "--no-run-data-pipeline", "--num-diffusion-samples", "1", "--af3-dir", STANDIN_CHECKOUT,
           "--no-cache", "--quiet"]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                            preexec_fn=_default_signals)
    deadline = time.monotonic() + 300
    while not glob.glob(str(tmp_path / ".out.af3-cpu-partial-*" / "tiny" / "tiny_data.json")):  # AF3 is in inference
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run did not reach inference:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.1)
    time.sleep(0.5)
    return proc


@pytest.mark.parametrize("signum, native", [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGHUP, False),
                                            (signal.SIGTERM, True)], ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGTERM-in-native-code"])
def test_a_stopped_predict_writes_nothing_and_exits_128_plus_the_signal(tmp_path, signum, native):
    out = tmp_path / "out"
    proc = _start_predict(tmp_path, out, **({"STANDIN_PREDICT_NATIVE": "1"} if native else {}))
    try:
        start = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err[-3000:]
    assert time.monotonic() - start < 30  # the prediction had 600 s to go
    name = signal.Signals(signum).name
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == f"af3-cpu: interrupted by {name}; nothing was written to {out}", err[-3000:]
    assert sum("interrupted" in line for line in lines) == 1 and "Traceback" not in err
    assert not list(tmp_path.glob(".out.af3-cpu-partial-*")), "the staging folder was left"
    assert not out.exists()
