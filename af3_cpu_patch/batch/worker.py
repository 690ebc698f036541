"""The work of one task, in a process that keeps AF3 loaded between tasks.

A worker process (a Dask worker, or the process running a ``--shard``)
applies the plugin's patches before AF3 is imported, imports AF3's stock
``run_alphafold.py`` once, and calls its ``main()`` per task with that task's
flags.  The ``keep-model`` patch makes every ``main()`` reuse one
``ModelRunner``, so weights load and each bucket compiles once per process;
AF3 caches its chemical components dictionary per process itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import socket
import time

from af3_cpu_patch import predict, runtime
from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.batch import layout, plan
from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.patches import BATCH_PATCHES
from af3_cpu_patch.patches import keep_model as model_reuse
from af3_cpu_patch.patches.check_results import NonFiniteResult


class InputFailure(Exception):
    """A task that would fail the same way on every try: not retried.

    AF3's input loader rejected its input, its result is not finite, or a
    setting this AF3 cannot run.  Nothing else is one: an exception from
    inside AF3's ``main()`` is retried whatever its type (see ``af3_rejection``).
    """


def af3_rejection(input_path: pathlib.Path) -> str | None:
    """What AF3's own input loader says against an input JSON (first line), or None if it reads it.

    Why by where and not by type: AF3 validates an input when its loader
    (``folding_input``) parses it, raising ValueError, KeyError, TypeError...;
    but a ValueError from inside ``main()`` -- featurisation, inference, a
    writer -- can as well be one a retry fixes.  So an input is "rejected"
    only when the loader fails on it, before AF3 runs.
    """
    from alphafold3.common import folding_input

    try:
        for _ in folding_input.load_fold_inputs_from_path(input_path):
            pass
    except Exception as exc:  # noqa: BLE001 - every exception of the loader means the same: a bad input
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """What every task of a batch shares; sent to workers with each task."""

    output_dir: pathlib.Path
    model_dir: pathlib.Path
    af3_dir: str | None = None
    db_dir: tuple[str, ...] = ()
    buckets: str | None = None
    num_recycles: int | None = None
    num_diffusion_samples: int | None = None
    precision: str = "auto"
    diffusion_precision: str = "auto"
    attention: str = "auto"
    threads: int | None = None
    cache_dir: pathlib.Path | None = predict.DEFAULT_CACHE
    extra: tuple[str, ...] = ()
    exact: bool = False

    def options(self, input_path: pathlib.Path, output_dir: pathlib.Path, data_pipeline: bool) -> predict.PredictOptions:
        return predict.PredictOptions(
            input=input_path, model_dir=self.model_dir, output_dir=output_dir, db_dir=self.db_dir, af3_dir=self.af3_dir,
            run_data_pipeline=data_pipeline, num_recycles=self.num_recycles, num_diffusion_samples=self.num_diffusion_samples,
            buckets=self.buckets, extra=self.extra, quiet=True, threads=self.threads, precision=self.precision, diffusion_precision=self.diffusion_precision, attention=self.attention,
            cache_dir=self.cache_dir, exact=self.exact,
        )


class Session:
    """AF3 imported once in this process, with the batch patches."""

    def __init__(self, settings: BatchOptions):

        self.settings = settings
        self.checkout = af3_checkout.find_checkout(settings.af3_dir)
        predict.check_versioned_options(settings.options(settings.output_dir, settings.output_dir, False), self.checkout)
        predict.check_output_terms(self.checkout)
        _, self.run_alphafold = runtime.start_af3(
            self.checkout.root, BATCH_PATCHES, precision=settings.precision, diffusion_precision=settings.diffusion_precision,
            attention=settings.attention, exact=settings.exact,
            buckets=predict.effective_buckets(settings.buckets, settings.exact), threads=settings.threads,
        )

    def run_main(self, input_json: dict, workdir: pathlib.Path, data_pipeline: bool, inference: bool, source: str = "") -> pathlib.Path:
        """AF3's ``main()`` on one input JSON (from the file ``source``); returns the folder AF3 wrote."""
        input_path = workdir / "input.json"
        input_path.write_text(json.dumps(input_json))
        rejection = af3_rejection(input_path)
        if rejection is not None:
            where = f" {source}" if source else ""
            raise InputFailure(f"AF3 rejected the input{where}: {rejection}: fix it (see AF3's docs/input.md)")
        af3_out = workdir / "af3"
        options = self.settings.options(input_path, af3_out, data_pipeline)
        argv = predict.af3_flags(options, self.checkout, af3_out)
        if not inference:
            argv.append("--run_inference=false")
        runtime.parse_flags(argv)
        try:
            with runtime.quiet_known_noise():
                self.run_alphafold.main(argv)
        except (NonFiniteResult, UsageProblem) as exc:
            raise InputFailure(str(exc)) from None
        written = [p for p in af3_out.iterdir() if p.is_dir()]
        if len(written) != 1:
            raise RuntimeError(f"expected one AF3 output folder in {af3_out}, found {len(written)}")
        return written[0]

    def chain_data(self, chains: tuple[plan.ChainData, ...]) -> dict[str, dict]:
        out = self.settings.output_dir
        found = {}
        for chain in chains:
            path = layout.chain_file(out, chain)
            if path.is_file():
                found[chain.key] = json.loads(path.read_text())
        return found


_session: Session | None = None


def session(settings: BatchOptions) -> Session:
    """This process's session, made on first use and kept (a worker serves many tasks)."""
    global _session
    if _session is None or _session.settings != settings:
        _session = Session(settings)
    return _session


def _marker(started: float, **extra) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "seconds": round(time.monotonic() - started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "models_built_in_process": model_reuse.built, **extra}


def run_chain(chain: plan.ChainData, settings: BatchOptions) -> str:
    """Data pipeline for one distinct chain; its MSA/template fields land in the chain cache."""
    out = settings.output_dir
    path = layout.chain_file(out, chain)
    if path.is_file():
        return str(path)
    work = session(settings)
    with layout.staging(path.parent) as folder:
        written = work.run_main(plan.chain_input(chain), folder, data_pipeline=True, inference=False)
        data_json = next(written.glob("*_data.json"), None)
        if data_json is None:
            raise RuntimeError(f"AF3's data pipeline wrote no *_data.json in {written}")
        (entry,) = json.loads(data_json.read_text())["sequences"]
        fields = entry[chain.kind]
        layout.write_json_atomic(path, {k: fields.get(k) for k in plan.DATA_FIELDS[chain.kind]})
    return str(path)


def run_task(task: plan.Task, settings: BatchOptions, *chain_results) -> dict:
    """Inference for one (input, seed): run, publish atomically, mark done.

    ``chain_results`` are the data tasks this one waited for (Dask passes
    their results).  Input failures are returned, not raised, so they are not
    retried; anything else raises and the engine retries it.  A stop by
    signal raises ``stops.Stopped`` after removing the staging folder; the
    runner records the task as interrupted.
    """
    started = time.monotonic()
    out = settings.output_dir
    if layout.is_done(out, task):
        return {"task": task.key, "status": "done", "skipped": True}
    work = session(settings)
    chain_data = work.chain_data(task.chains)
    missing = [c for c in task.chains if c.key not in chain_data]
    try:
        if missing:
            raise InputFailure(f"no data-pipeline result for {len(missing)} chain(s): run the data stage first "
                               "(--stage data or all), or give MSAs in the input")
        with layout.staging(out / task.job) as folder:
            written = work.run_main(plan.task_input(task, chain_data), folder, data_pipeline=False, inference=True, source=task.source)
            layout.publish(written, layout.task_dir(out, task), _marker(started, task=task.key, bucket=task.bucket,
                                                                             input_digest=task.digest))
    except InputFailure as exc:
        return {"task": task.key, "status": "failed", "error": str(exc), "retry": False}
    layout.clear_failure(out, task)
    return {"task": task.key, "status": "done", "seconds": round(time.monotonic() - started, 1), "pid": os.getpid(),
            "host": socket.gethostname()}
