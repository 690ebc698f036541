"""What a batch tells its user: one live summary line, a final table, a summary JSON."""

from __future__ import annotations

import datetime
import sys
import threading
import time

from af3_cpu_patch.batch import layout


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class Progress:
    """Counts tasks and prints ``done / running / failed / left``, throughput and time left."""

    def __init__(self, total: int, interval: float = 30.0, running=None, where: str = ""):
        self.total, self.interval, self._running, self.where = total, interval, running, where
        self.done = self.failed = self.skipped = self.interrupted = 0
        self.results: list[dict] = []
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self):
        if self.where:
            self.say(self.where)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=1)

    def _tick(self):
        while not self._stop.wait(self.interval):
            self.say(self.line())

    @staticmethod
    def say(text: str) -> None:
        print(f"[af3-cpu batch] {text}", file=sys.stderr, flush=True)

    def record(self, result: dict) -> None:
        self.results.append(result)
        if result["status"] == "failed":
            self.failed += 1
            self.say(f"{result['task']} failed: {result.get('error', '')}")
        elif result["status"] == "interrupted":  # cut short by a stop; the stop's own line says so once
            self.interrupted += 1
            return
        elif result.get("skipped"):
            self.skipped += 1
            return  # the start line already said how many were done before
        else:
            self.done += 1
        self.say(self.line())

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        finished = self.done + self.failed + self.skipped
        left = self.total - finished
        try:
            running = min(left, self._running()) if self._running else 0
        except Exception:  # noqa: BLE001 - a status line must never end a batch
            running = 0
        rate = self.done / elapsed * 3600 if elapsed > 0 else 0.0
        eta = f", ~{_duration(left / rate * 3600)} left" if self.done and left else ""
        return (f"{self.done + self.skipped} done, {running} running, {self.failed} failed, {left - running} waiting"
                f" | {rate:.1f} tasks/h{eta} | {_duration(elapsed)} elapsed")


def table(results: list[dict]) -> str:
    rows = [("task", "status", "time", "note")]
    for r in sorted(results, key=lambda r: r["task"]):
        status = "skipped (done before)" if r.get("skipped") else r["status"]
        seconds = _duration(r["seconds"]) if r.get("seconds") is not None else ""
        rows.append((r["task"], status, seconds, r.get("error", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)).rstrip() for row in rows)


def write_summary(out, progress: Progress, engine: str, rejected: dict[str, str], merged: list[str]) -> dict:
    summary = {
        "engine": engine,
        "elapsed_s": round(time.monotonic() - progress.start, 1),
        "counts": {"tasks": progress.total, "done": progress.done, "skipped_done_before": progress.skipped,
                   "failed": progress.failed, "interrupted": progress.interrupted, "rejected_inputs": len(rejected)},
        "tasks": sorted(progress.results, key=lambda r: r["task"]),
        "rejected_inputs": rejected,
        "merged_jobs": merged,
    }
    layout.write_json_atomic(out / "batch_summary.json", summary)
    return summary
