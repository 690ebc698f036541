"""Drive a batch: plan, skip what is done, run the rest on an engine, merge, report."""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import traceback
import uuid

from af3_cpu_patch.batch import engines, layout, plan, report, worker
from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import memory_forecast, stops


@dataclasses.dataclass
class Request:
    inputs: list[pathlib.Path]
    settings: worker.BatchOptions
    run_data_pipeline: bool = True
    stage: str = "all"  # data | infer | all
    retries: int = 2
    workers: int | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    cluster: engines.ClusterOptions = dataclasses.field(default_factory=engines.ClusterOptions)
    shard: tuple[int, int] | None = None
    max_memory: str | None = None  # as --max-memory: GB, 'none', or None for what is available
    interval: float = 30.0


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageProblem(f"--shard {text!r} is not i/N: give e.g. --shard 0/4 (shards 0..3 of 4)") from None
    if count < 1 or not 0 <= index < count:
        raise UsageProblem(f"--shard {text}: i must be in 0..N-1 and N at least 1")
    return index, count


class Batch:
    def __init__(self, request: Request):
        self.request = request
        self.out = request.settings.output_dir
        files = plan.input_files(request.inputs)
        buckets = worker.predict.effective_buckets(request.settings.buckets, request.settings.exact)
        self.plan = plan.make_plan(files, buckets, request.run_data_pipeline)
        self.by_job: dict[str, list[plan.Task]] = collections.defaultdict(list)
        for task in self.plan.tasks:
            self.by_job[task.job].append(task)
        self.merged: list[str] = []
        self.last_error = ""
        # What a stop needs to record: the run's progress, the tasks it set out to run, the engine.
        self.progress: report.Progress | None = None
        self.todo: list[plan.Task] = []
        self.engine = "not started"

    # -- what is left -------------------------------------------------------
    def chains_todo(self, tasks: list[plan.Task]) -> list[plan.ChainData]:
        if self.request.stage == "infer":
            return []
        wanted = {c.key: c for t in tasks for c in t.chains}
        if self.request.stage == "data":
            wanted = {c.key: c for c in self.plan.chains}
        return [c for c in wanted.values() if not layout.chain_file(self.out, c).is_file()]

    def tasks_todo(self, tasks: list[plan.Task]) -> tuple[list[plan.Task], list[plan.Task]]:
        if self.request.stage == "data":
            return [], []
        finished = {t.key for t in tasks if layout.is_done(self.out, t)}  # one read of each done marker
        return [t for t in tasks if t.key in finished], [t for t in tasks if t.key not in finished]

    # -- results --------------------------------------------------------------
    def finish(self, task: plan.Task, result: dict, progress: report.Progress) -> None:
        if result["status"] == "failed":
            layout.record_failure(self.out, task, result["error"])
        progress.record(result)
        self.maybe_merge(task.job)

    def maybe_merge(self, job: str) -> None:
        if job not in self.merged and layout.merge(self.out, job, self.by_job[job]) is not None:
            self.merged.append(job)

    def fail_too_big(self, todo: list[plan.Task], capacity_gb: float | None, progress: report.Progress) -> list[plan.Task]:
        """Record tasks whose memory forecast exceeds what a worker has; returns the others."""
        fits = []
        for task in todo:
            if capacity_gb is None or task.forecast_gb <= capacity_gb:
                fits.append(task)
                continue
            self.finish(task, {"task": task.key, "status": "failed", "error": f"needs ~{task.forecast_gb} GB (bucket {task.bucket}), "
                               f"more than the {capacity_gb:g} GB a worker has: give workers more memory or raise --max-memory"}, progress)
        return fits

    @staticmethod
    def error_text(exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    # -- engines --------------------------------------------------------------
    def run_shard(self, index: int, count: int) -> report.Progress:
        tasks = self.plan.shard(index, count)
        chains = self.chains_todo(tasks)
        if self.request.stage == "data":
            chains = chains[index::count]
        done, todo = self.tasks_todo(tasks)
        with report.Progress(len(done) + len(todo), self.request.interval,
                             where=f"shard {index}/{count}: {len(todo)} task(s) and {len(chains)} data-pipeline chain(s) to run, "
                                   f"{len(done)} task(s) done before") as progress:
            self.progress, self.todo = progress, todo
            for task in done:
                progress.record({"task": task.key, "status": "done", "skipped": True})
                self.maybe_merge(task.job)
            todo = self.fail_too_big(todo, memory_forecast.parse_max_memory(self.request.max_memory), progress)
            for chain in chains:
                self._retrying(worker.run_chain, chain, progress, f"chain {chain.key}")
            for task in todo:
                result = self._retrying(worker.run_task, task, progress, task.key)
                self.finish(task, result or {"task": task.key, "status": "failed", "error": self.last_error}, progress)
        return progress

    def _retrying(self, call, item, progress: report.Progress, what: str):
        """``call(item, settings)`` in this process, tried ``1 + retries`` times; None if every try failed."""
        for attempt in range(self.request.retries + 1):
            try:
                return call(item, self.request.settings)
            except UsageProblem:
                raise
            except worker.InputFailure as exc:  # fails the same way on every try
                self.last_error = str(exc)
                progress.say(f"{what}: {self.last_error}")
                return None
            except Exception as exc:  # noqa: BLE001 - recorded, and the batch goes on
                stop = stops.as_stop(exc)  # a stop that came wrapped (JAX wraps exceptions of host callbacks)
                if stop is not None:
                    raise stop from exc
                self.last_error = self.error_text(exc)
                progress.say(f"{what}: attempt {attempt + 1} failed: {self.last_error}")
        return None

    def interrupted(self, stop: stops.Stopped) -> str:
        """Record the tasks a stop cut short as interrupted, write the summary; returns the stop's note.

        Interrupted, not failed: nothing is wrong with them, their staging
        folders are removed (or swept by the next run), no ``.failed.json``
        is written, and the next run of the same command does them.
        """
        progress = self.progress
        if progress is None:
            return "no task had started: run the same command again"
        recorded = {r["task"] for r in progress.results}
        cut = 0
        for task in self.todo:
            if task.key in recorded:
                continue
            if layout.is_done(self.out, task):  # published just before the stop
                progress.record({"task": task.key, "status": "done"})
            else:
                progress.record({"task": task.key, "status": "interrupted", "error": f"interrupted by {stop.name}"})
                cut += 1
        report.write_summary(self.out, progress, self.engine, self.plan.rejected, self.merged)
        return (f"{cut} task(s) recorded as interrupted, {progress.done} done in this run: run the same command again "
                f"to finish the batch (summary: {self.out / 'batch_summary.json'})")

    def run_dask(self, client, capacity_gb: float | None, where: str) -> report.Progress:
        from distributed import as_completed

        settings = self.request.settings
        chains = self.chains_todo(self.plan.tasks)
        done, todo = self.tasks_todo(self.plan.tasks)
        fits = [t for t in todo if capacity_gb is None or t.forecast_gb <= capacity_gb]
        submitted: dict = {}  # future -> ("chain", ChainData) | ("task", Task)
        chain_futures = {}
        for chain in chains:
            future = client.submit(worker.run_chain, chain, settings, key=f"af3-chain-{chain.key}-{uuid.uuid4().hex[:8]}",
                                   retries=self.request.retries, pure=False, priority=len(todo) + 1)
            chain_futures[chain.key] = future
            submitted[future] = ("chain", chain)
        for rank, task in enumerate(fits):  # ordered by bucket: a worker's consecutive tasks reuse its compiled model
            deps = [chain_futures[c.key] for c in task.chains if c.key in chain_futures]
            resources = {engines.MEMORY_RESOURCE: task.forecast_gb} if capacity_gb is not None else None
            future = client.submit(worker.run_task, task, settings, *deps, key=f"af3-{task.job}-seed-{task.seed}-{uuid.uuid4().hex[:8]}",
                                   retries=self.request.retries, pure=False, priority=len(fits) - rank, resources=resources)
            submitted[future] = ("task", task)
        task_keys = {f.key for f, (kind, _) in submitted.items() if kind == "task"}

        def running() -> int:
            return sum(1 for keys in client.processing().values() for k in keys if k in task_keys)

        total = len(done) + len(todo)
        where += f": {len(todo)} task(s) and {len(chains)} data-pipeline chain(s) to run, {len(done)} task(s) done before"
        with report.Progress(total, self.request.interval, running=running, where=where) as progress:
            self.progress, self.todo = progress, todo
            for task in done:
                progress.record({"task": task.key, "status": "done", "skipped": True})
                self.maybe_merge(task.job)
            self.fail_too_big(todo, capacity_gb, progress)
            for future in as_completed(list(submitted)):
                kind, item = submitted[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - retried by Dask already; recorded, the batch goes on
                    if kind == "chain":
                        progress.say(f"data pipeline for chain {item.key} failed: {self.error_text(exc)}")
                        continue
                    result = {"task": item.key, "status": "failed", "error": self.error_text(exc)}
                if kind == "task":
                    self.finish(item, result, progress)
        return progress


def _client_for(request: Request, batch: Batch):
    """(client, closers, worker memory capacity in GB or None, description) for the chosen Dask engine."""
    from distributed import Client

    if request.scheduler or request.scheduler_file:
        client = Client(request.scheduler, scheduler_file=request.scheduler_file, timeout="60s")
        client.wait_for_workers(1, timeout=300)
        declared = [w.get("resources", {}).get(engines.MEMORY_RESOURCE) for w in client.scheduler_info()["workers"].values()]
        capacity = max(declared) if declared and all(declared) else None
        where = f"Dask scheduler {client.scheduler.address}"
        if capacity is None:
            where += f" (its workers declare no {engines.MEMORY_RESOURCE} resource: tasks are placed without memory forecasts)"
        return client, [client], capacity, where
    if request.cluster.cluster:
        cluster, capacity = engines.jobqueue_cluster(request.cluster)
        cluster.adapt(minimum_jobs=0, maximum_jobs=request.cluster.jobs)
        client = Client(cluster)
        return client, [client, cluster], capacity, f"{request.cluster.cluster.upper()} via dask-jobqueue, up to {request.cluster.jobs} job(s)"
    cluster, capacity = engines.local_cluster(request.workers, memory_forecast.parse_max_memory(request.max_memory) if request.max_memory else None)
    client = Client(cluster)
    return client, [client, cluster], capacity, f"local Dask cluster, {len(cluster.workers)} worker(s)"


def run(request: Request) -> dict:
    """Run the batch; returns the summary (also written to OUTPUT_DIR/batch_summary.json)."""
    out = request.settings.output_dir
    if request.stage == "data" and not request.run_data_pipeline:
        raise UsageProblem("--stage data runs the data pipeline: drop --no-run-data-pipeline")
    batch = Batch(request)
    out.mkdir(parents=True, exist_ok=True)
    for file, why in batch.plan.rejected.items():
        report.Progress.say(f"skipping input {file}: {why}")
    try:
        # From here on SIGTERM/SIGINT/SIGHUP stop the batch cleanly: the running task's staging folder is removed,
        # unfinished tasks are recorded as interrupted, and the exit code is 128 + signal (host.stops).
        with stops.guard(), stops.on_stop(batch.interrupted):
            progress = _run_engine(request, batch)
    except stops.Stopped as stop:
        stop.note = batch.interrupted(stop)
        raise
    layout.sweep(out)  # what tasks of dead workers left during this run
    summary = report.write_summary(out, progress, batch.engine, batch.plan.rejected, batch.merged)
    print(report.table(progress.results))
    counts = summary["counts"]
    print(f"{counts['done']} run, {counts['skipped_done_before']} done before, {counts['failed']} failed, "
          f"{counts['rejected_inputs']} input file(s) rejected; summary: {out / 'batch_summary.json'}")
    return summary


def _run_engine(request: Request, batch: Batch) -> report.Progress:
    """Sweep what dead tasks left, then run what is left on the engine the request asks for."""
    out = request.settings.output_dir
    swept = layout.sweep(out)
    if swept:
        report.Progress.say(f"removed {swept} unfinished temporary folder(s) of an earlier run")
    chains = batch.chains_todo(batch.plan.tasks)
    _, todo = batch.tasks_todo(batch.plan.tasks)
    if request.shard:
        batch.engine = f"shard {request.shard[0]}/{request.shard[1]}"
        progress = batch.run_shard(*request.shard)
    elif not chains and not todo:
        batch.engine = "none (nothing left to do)"
        progress = batch.run_shard(0, 1)
    elif not (request.scheduler or request.scheduler_file or request.cluster.cluster) and not engines.have_dask():
        report.Progress.say("Dask is not installed (pip install 'af3-cpu-patch[dask]'): running the tasks one by one in this process")
        batch.engine = "this process (no Dask)"
        progress = batch.run_shard(0, 1)
    else:
        if not engines.have_dask():
            raise UsageProblem("--scheduler, --scheduler-file and --cluster need Dask: pip install 'af3-cpu-patch[dask]'")
        client, closers, capacity, batch.engine = _client_for(request, batch)
        try:
            dashboard = getattr(client, "dashboard_link", None) if engines.have_dashboard() else None
            where = batch.engine + (f"; dashboard {dashboard}" if dashboard and request.scheduler is None else "")
            progress = batch.run_dask(client, capacity, where)
        finally:
            for closer in closers:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    traceback.print_exc()
    return progress
