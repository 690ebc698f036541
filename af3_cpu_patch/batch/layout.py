"""Where a batch writes, and how a result appears: whole, or not at all.

    OUTPUT_DIR/<job>/seed-<S>/          AF3's own output of one seed (published by one rename)
    OUTPUT_DIR/<job>/seed-<S>/af3_cpu_task.json   done marker (with the input's digest), arrives with the rename
    OUTPUT_DIR/<job>/seed-<S>.failed.json         the error of a task that failed
    OUTPUT_DIR/<job>/<job>_model.cif, ..._ranking_scores.csv   the merge: best seed, ranking across seeds
    OUTPUT_DIR/.af3-cpu/chains/<key>.json         data-pipeline results per distinct chain
    OUTPUT_DIR/batch_summary.json

A task works in a hidden staging folder next to its destination, holding an
``flock`` on it while alive; a finished result gets its done marker inside
the staging folder and then reaches its place by one directory rename, so
"marker present" means done and whole, and anything else is redone.  The
rename is a critical block (:mod:`af3_cpu_patch.host.stops`): a signal
waits until it is done.  Staging folders whose lock is free belong to dead
or interrupted tasks and are swept.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import pathlib
import shutil
import socket
import time
import uuid

from af3_cpu_patch.batch.plan import ChainData, Task
from af3_cpu_patch.host import stops

DONE = "af3_cpu_task.json"
MERGED = "af3_cpu_merged.json"
STAGING_MARK = ".af3-cpu-staging-"


def task_dir(out: pathlib.Path, task: Task) -> pathlib.Path:
    return out / task.job / f"seed-{task.seed}"


def failure_file(out: pathlib.Path, task: Task) -> pathlib.Path:
    return out / task.job / f"seed-{task.seed}.failed.json"


def chain_file(out: pathlib.Path, chain: ChainData) -> pathlib.Path:
    return out / ".af3-cpu" / "chains" / f"{chain.key}.json"


def is_done(out: pathlib.Path, task: Task) -> bool:
    """The task's result is in place, marked done, and was made from the same input."""
    marker = task_dir(out, task) / DONE
    try:
        return json.loads(marker.read_text()).get("input_digest") == task.digest
    except (OSError, ValueError):
        return False


def write_json_atomic(path: pathlib.Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{STAGING_MARK}{uuid.uuid4().hex}.json"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


@contextlib.contextmanager
def staging(parent: pathlib.Path):
    """A locked hidden folder in ``parent``; removed on exit whatever happened (a stop included).

    If a signal has to end the process while AF3 is in native code, the stop
    watcher removes it too; a folder a SIGKILL leaves keeps no lock and is swept.
    """
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / f"{STAGING_MARK}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    lock = open(folder / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with stops.on_stop(lambda stop: shutil.rmtree(folder, ignore_errors=True)):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.close()


def publish(source: pathlib.Path, destination: pathlib.Path, marker: dict) -> None:
    """Put a finished folder in place by one rename, its done marker already inside.

    Why the marker goes in first: the rename then makes result and marker
    appear together, so a reader never sees a whole result without its
    marker or a marker beside half a result.  A folder already at
    ``destination`` (a result being redone: unmarked, or made from another
    input) is renamed aside first and removed afterwards; a stop or crash
    in between leaves it as a staging folder for the sweep.
    """
    write_json_atomic(source / DONE, marker)
    aside = None
    with stops.critical():
        (destination.parent / MERGED).unlink(missing_ok=True)  # the job's merge is out of date
        if destination.exists():
            aside = destination.parent / f"{STAGING_MARK}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(destination, aside)
        os.rename(source, destination)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _age(path: pathlib.Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def sweep(out: pathlib.Path) -> int:
    """Remove staging folders of tasks that died (their lock is free); returns how many."""
    swept = 0
    for folder in list(out.glob(f"*/{STAGING_MARK}*")) + list(out.glob(f".af3-cpu/*/{STAGING_MARK}*")):
        if folder.is_file():
            if _age(folder) > 3600:
                folder.unlink(missing_ok=True)
                swept += 1
            continue
        try:
            with open(folder / ".lock") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:  # no lock yet: being created right now, or left by a crash long ago
            if _age(folder) < 600:
                continue
            shutil.rmtree(folder, ignore_errors=True)
        except BlockingIOError:
            continue  # a live task's
        swept += 1
    return swept


def record_failure(out: pathlib.Path, task: Task, error: str) -> None:
    write_json_atomic(failure_file(out, task), {"task": task.key, "input": task.source, "error": error,
                                                "host": socket.gethostname(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def clear_failure(out: pathlib.Path, task: Task) -> None:
    failure_file(out, task).unlink(missing_ok=True)


def _ranking(seed_dir: pathlib.Path) -> tuple[pathlib.Path | None, list[list[str]]]:
    files = sorted(seed_dir.glob("*ranking_scores.csv"))
    if not files:
        return None, []
    with files[0].open() as f:
        rows = list(csv.reader(f))
    return files[0], [r for r in rows[1:] if r]


def merge(out: pathlib.Path, job: str, tasks: list[Task]) -> dict | None:
    """When every seed of ``job`` is done: AF3's ranking across seeds and the best model at the job's top level.

    AF3 writes, per run, a ranking CSV of (seed, sample, score) and the top
    sample's files at the top level; a batch runs seeds apart, so this puts
    together the same from the seeds' folders.  Returns the merge record.
    """
    if not all(is_done(out, t) for t in tasks):
        return None
    job_dir = out / job
    if (job_dir / MERGED).is_file():
        record = json.loads((job_dir / MERGED).read_text())
        if record.get("seeds") == [t.seed for t in tasks]:
            return record  # merged before, and no seed was redone since
    rows, csv_name, best = [], None, None
    for task in tasks:
        seed_dir = task_dir(out, task)
        path, seed_rows = _ranking(seed_dir)
        csv_name = csv_name or (path.name if path else None)
        for row in seed_rows:
            rows.append(row)
            score = float(row[2])
            if best is None or score > best[0]:
                best = (score, seed_dir, row)
    # Everything is made under hidden names first; the renames into place then run as one critical block, the
    # merge record last, so a stop leaves either the whole merge or an out-of-date one that the next run redoes.
    ready: list[tuple[pathlib.Path, str]] = []
    try:
        if best is not None:
            for item in sorted(best[1].iterdir()):
                if item.is_file() and item.name not in (DONE, csv_name):
                    ready.append((_link_or_copy(item, job_dir / f"{STAGING_MARK}{uuid.uuid4().hex}"), item.name))
        if csv_name:
            tmp = job_dir / f"{STAGING_MARK}{uuid.uuid4().hex}.csv"
            with tmp.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["seed", "sample", "ranking_score"])
                writer.writerows(rows)
            ready.append((tmp, csv_name))
        record = {"job": job, "seeds": [t.seed for t in tasks],
                  "best": {"seed": int(best[2][0]), "sample": int(best[2][1]), "ranking_score": best[0]} if best else None,
                  "top_level_files": [name for _, name in ready if name != csv_name]}
        tmp = job_dir / f"{STAGING_MARK}{uuid.uuid4().hex}.json"
        tmp.write_text(json.dumps(record, indent=1))
        ready.append((tmp, MERGED))
        with stops.critical():
            for tmp, name in ready:
                os.replace(tmp, job_dir / name)
    finally:
        for tmp, _ in ready:
            tmp.unlink(missing_ok=True)  # left only if the renames did not happen
    return record


def _link_or_copy(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """A hard link (instant, no second copy of big files such as AF3's confidences), else a copy."""
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(source, target)
    return target
