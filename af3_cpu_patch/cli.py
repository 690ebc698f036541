"""The ``af3-cpu`` command: thin click front end.

Every failure a user can cause ends in one line on stderr naming the problem
and the fix, and a non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import sys
import traceback

import click

from af3_cpu_patch import af3_checkout, cpu_runtime
from af3_cpu_patch.af3_checkout import UsageProblem

EXACT_HELP = (
    "AF3's own numbers: stock precision, attention and buckets (unless --buckets), and only the patches that keep "
    "stock's bits; output bit-identical to stock run_alphafold.py on this CPU (slower)."
)
AF3_DIR_HELP = "Root of DeepMind's alphafold3 checkout (holds run_alphafold.py). Default: $AF3_DIR, else found from the installed alphafold3."


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"af3-cpu: error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns exceptions into one-line errors."""

    def invoke(self, ctx):
        from af3_cpu_patch.host import stops

        debug = "--debug" in sys.argv[1:] or bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except UsageProblem as exc:
            _fail(str(exc), 2, debug)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except stops.Stopped as stop:  # SIGTERM/SIGINT/SIGHUP during a run: the note says what was kept
            if debug:
                traceback.print_exc()
            click.echo(f"{stops.PREFIX}{stop.message()}", err=True)
            sys.exit(stop.exit_code)  # 128 + signal, as a shell reports a process a signal ended
        except KeyboardInterrupt:  # Ctrl-C outside a run's guard: no claim about output this code did not stage
            if debug:
                traceback.print_exc()
            click.echo(f"{stops.PREFIX}interrupted by SIGINT", err=True)
            sys.exit(128 + signal.SIGINT)
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            from af3_cpu_patch.result_check import NonFiniteResult

            if isinstance(exc, NonFiniteResult):
                _fail(str(exc), 1, debug)
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail(f"{type(exc).__name__}: {detail} (nothing was written; --debug shows the traceback)", 1, debug)


# Set once a command has run AF3 in this process; ``entry`` then skips the
# interpreter's teardown.
_ran_af3 = False


def entry() -> None:
    """The ``af3-cpu`` command: ``main``, and after a finished AF3 run an exit without interpreter teardown.

    Why: after a prediction the interpreter frees JAX's weights, compiled
    programs, thread pools and every module one by one before the process
    ends, about a second of a small run for nothing (the OS takes the memory
    back at once).  Output is written and moved into place by then; stdout,
    stderr and logging are flushed first.  In-process callers of ``main``
    (tests, scripts) get the normal ``SystemExit``.
    """
    global _ran_af3
    _ran_af3 = False
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if not _ran_af3:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="af3-cpu-patch")
def main(debug: bool) -> None:
    """Run an unmodified DeepMind AlphaFold 3 on CPUs."""


def _cache_dir(cache_dir: pathlib.Path | None, no_cache: bool) -> pathlib.Path | None:
    """The compilation cache ``--cache-dir``/``--no-cache`` ask for (predict and batch alike).

    A given ``--cache-dir`` is the parent of this CPU's and jax's subdirectory,
    as the default is (see :mod:`af3_cpu_patch.cache_dirs`): nodes of
    different CPUs can share one directory without mixing their programs.
    """
    from af3_cpu_patch import cache_dirs
    from af3_cpu_patch import predict as predict_module

    if no_cache:
        return None
    return cache_dirs.compilation_cache(cache_dir.expanduser().resolve()) if cache_dir else predict_module.DEFAULT_CACHE


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=pathlib.Path))
@click.option("--model-dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path.home() / "models", show_default=True, help="AF3 weights directory.")
@click.option("--db-dir", multiple=True, help="Genetic database directory (repeatable), for the data pipeline.")
@click.option("--output-dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path("af3_output"), show_default=True)
@click.option("--af3-dir", default=None, help=AF3_DIR_HELP)
@click.option("--run-data-pipeline/--no-run-data-pipeline", default=True, show_default=True)
@click.option("--num-recycles", type=click.IntRange(min=1), default=None, help="AF3 default: 10 (AF3 takes 1 or more).")
@click.option("--num-diffusion-samples", type=click.IntRange(min=1), default=None, help="AF3 default: 5.")
@click.option("--num-seeds", type=click.IntRange(min=1), default=None, help="Expand each input to this many seeds.")
@click.option("--buckets", default=None, help="Comma-separated token buckets, as AF3's --buckets; 'stock' for AF3's own. Default: CPU-sized buckets from 16 tokens.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for XLA. Default: every core this process may use (affinity mask, cgroup CPU quota, SLURM/PBS allocation; af3-cpu doctor says which).")
@click.option("--precision", type=click.Choice(cpu_runtime.PRECISION_CHOICES), default="auto", show_default=True, help="Trunk precision; auto: bf16 on CPUs with native bf16, else f32.")
@click.option("--diffusion-precision", type=click.Choice(cpu_runtime.PRECISION_CHOICES), default="auto", show_default=True, help="Diffusion head's default-precision products; bf16: one bf16 pass as on a TPU (faster with native bf16); auto: bf16 on CPUs with native bf16, else f32 (CPU-stock AF3).")
@click.option("--attention", type=click.Choice(cpu_runtime.ATTENTION_CHOICES), default="auto", show_default=True, help="Trunk attention; auto: xla_chunked where AF3 uses tokamax (v3.0.2+), else xla.")
@click.option("--cache-dir", type=click.Path(path_type=pathlib.Path), default=None, help="JAX compilation cache, so the next run of the same bucket skips XLA compilation. Runs use a subdirectory of it per CPU type and jax version (e.g. x86_64-fma-avx2-<hash>-jax0.5.3-jaxlib0.5.3), so machines with different CPUs can share it. Default: ~/.cache/af3-cpu/jax ($XDG_CACHE_HOME/af3-cpu/jax).")
@click.option("--no-cache", is_flag=True, help="No compilation cache.")
@click.option("--quiet", is_flag=True, help="No progress bar: only AF3's own output.")
@click.option("--max-memory", default=None, metavar="GB|none", help="Refuse inputs whose forecast peak memory exceeds this. Default: the memory available now; 'none': no check.")
@click.option("--exact", is_flag=True, help=EXACT_HELP)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUN_ALPHAFOLD_FLAGS]")
def predict(input_path, model_dir, db_dir, output_dir, af3_dir, run_data_pipeline, num_recycles, num_diffusion_samples, num_seeds, buckets, threads, precision, diffusion_precision, attention, cache_dir, no_cache, quiet, max_memory, exact, extra):
    """Predict INPUT (an AF3 input JSON file or a directory of them) on the CPU.

    Runs AF3's own run_alphafold.py with the CPU fixes applied; flags after
    `--` are passed to it unchanged.
    """
    from af3_cpu_patch import predict as predict_module

    options = predict_module.PredictOptions(
        input=input_path.expanduser().resolve(),
        model_dir=model_dir.expanduser().resolve(),
        output_dir=output_dir.expanduser().resolve(),
        db_dir=db_dir,
        af3_dir=af3_dir,
        run_data_pipeline=run_data_pipeline,
        num_recycles=num_recycles,
        num_diffusion_samples=num_diffusion_samples,
        num_seeds=num_seeds,
        buckets=buckets,
        extra=extra,
        quiet=quiet,
        threads=threads,
        precision=precision,
        diffusion_precision=diffusion_precision,
        attention=attention,
        max_memory=max_memory,
        cache_dir=_cache_dir(cache_dir, no_cache),
        exact=exact,
    )
    global _ran_af3
    _ran_af3 = True
    out = predict_module.run(options)
    click.echo(f"AF3 output written to {out}")


@main.command()
@click.option("--model-dir", type=click.Path(path_type=pathlib.Path), default=None, help="AF3 weights directory (default ~/models).")
@click.option("--db-dir", multiple=True, help="Genetic database directory to check (repeatable).")
@click.option("--af3-dir", default=None, help=AF3_DIR_HELP)
def doctor(model_dir, db_dir, af3_dir):
    """Tell whether a CPU run can work here and what to fix (exit 0 only if it can)."""
    from af3_cpu_patch import doctor as doctor_module

    checks = doctor_module.run_checks(model_dir, tuple(db_dir), af3_dir)
    click.echo(doctor_module.render(checks))
    sys.exit(1 if any(c.level == "FAIL" for c in checks) else 0)


@main.command("random-weights")
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=pathlib.Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--af3-dir", default=None, help=AF3_DIR_HELP)
@click.option("--fill-zero-init", is_flag=True, help="Also give AF3's zero-initialised layers random values, so every layer affects the output (for comparing precisions).")
def random_weights(out_dir, seed, af3_dir, fill_zero_init):
    """Write RANDOM AF3 weights of the real shapes to DIR -- NOT FOR PREDICTIONS.

    For checking an install end to end and for benchmarks, without the gated
    weights: structures predicted with them are meaningless.
    """
    from af3_cpu_patch import random_weights as rw

    path = rw.write(out_dir, seed=seed, af3_dir=af3_dir, fill_zero=fill_zero_init)
    click.echo(f"wrote RANDOM weights (NOT FOR PREDICTIONS) to {path}")


def _rerun_argv(ctx: click.Context, drop: tuple[str, ...]) -> list[str]:
    """This command line again, from the parsed options (paths absolute), without ``drop``."""
    argv = ["af3-cpu", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in drop or value is None or value == param.get_default(ctx) or value == ():
            continue
        if isinstance(param, click.Argument):
            continue
        flag = param.opts[0] if value is not False or not param.secondary_opts else param.secondary_opts[0]
        if isinstance(value, tuple):
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, bool):
            argv.append(flag)
        else:
            argv += [flag, str(value.resolve() if isinstance(value, pathlib.Path) else value)]
    argv += [str(p.resolve()) for p in ctx.params["inputs"]]
    if ctx.meta.get("passthrough"):
        argv += ["--", *ctx.meta["passthrough"]]
    return argv


class _PassThroughCommand(click.Command):
    """Keeps what follows ``--`` for run_alphafold.py apart from a variadic INPUTS argument."""

    def parse_args(self, ctx, args):
        if "--" in args:
            cut = args.index("--")
            ctx.meta["passthrough"] = tuple(args[cut + 1:])
            args = args[:cut]
        return super().parse_args(ctx, args)


@main.command(cls=_PassThroughCommand)
@click.argument("inputs", metavar="INPUTS...", nargs=-1, required=True, type=click.Path(path_type=pathlib.Path))
@click.option("--output-dir", type=click.Path(path_type=pathlib.Path), required=True, help="One folder per input; re-running resumes.")
@click.option("--model-dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path.home() / "models", show_default=True, help="AF3 weights directory.")
@click.option("--db-dir", multiple=True, help="Genetic database directory (repeatable), for the data pipeline.")
@click.option("--af3-dir", default=None, help=AF3_DIR_HELP)
@click.option("--run-data-pipeline/--no-run-data-pipeline", default=True, show_default=True)
@click.option("--stage", type=click.Choice(["all", "data", "infer"]), default="all", show_default=True, help="data: MSA/template search only (once per distinct chain); infer: inference only, using the data stage's results.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="A running Dask scheduler, e.g. tcp://host:8786.")
@click.option("--scheduler-file", default=None, type=click.Path(path_type=pathlib.Path), help="A running Dask scheduler's file.")
@click.option("--cluster", type=click.Choice(["slurm", "pbs"]), default=None, help="Start Dask workers as SLURM/PBS jobs (dask-jobqueue).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="--cluster: most jobs at once (adaptive); --print-sbatch: array size.")
@click.option("--cores", type=click.IntRange(min=1), default=None, help="Cores per job (--cluster, --print-sbatch).")
@click.option("--memory", default=None, help="Memory per job, e.g. 64GB (--cluster, --print-sbatch). Default: the largest task's memory forecast with headroom.")
@click.option("--walltime", default=None, help="Time per job, [D-]HH:MM:SS; workers retire before it. Default: the time forecast of a job's tasks with a margin (24:00:00 while the data pipeline or --exact runs are left, which are not forecast).")
@click.option("--queue", default=None, help="Partition/queue (--cluster, --print-sbatch).")
@click.option("--account", default=None, help="Account to charge (--cluster, --print-sbatch).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Local cluster: worker processes, each with its share of cores and memory (default 1: all of them).")
@click.option("--shard", default=None, metavar="I/N", help="Run only shard I of N of the task list in this process (no Dask).")
@click.option("--print-sbatch", is_flag=True, help="Print an sbatch --array script running --jobs shards of this batch, and exit.")
@click.option("--max-memory", default=None, metavar="GB|none", help="Memory a task may use (default: what is available, per worker); tasks forecast above it are recorded as failed.")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True, help="Retries of a task whose worker failed or died.")
@click.option("--num-recycles", type=click.IntRange(min=1), default=None, help="AF3 default: 10 (AF3 takes 1 or more).")
@click.option("--num-diffusion-samples", type=click.IntRange(min=1), default=None, help="AF3 default: 5.")
@click.option("--buckets", default=None, help="As for predict. Default: CPU-sized buckets from 16 tokens.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="XLA threads per worker. Default: the worker's cores.")
@click.option("--precision", type=click.Choice(cpu_runtime.PRECISION_CHOICES), default="auto", show_default=True)
@click.option("--diffusion-precision", type=click.Choice(cpu_runtime.PRECISION_CHOICES), default="auto", show_default=True)
@click.option("--attention", type=click.Choice(cpu_runtime.ATTENTION_CHOICES), default="auto", show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=pathlib.Path), default=None, help="Shared JAX compilation cache; runs use a subdirectory of it per CPU type and jax version, as predict does (default ~/.cache/af3-cpu/jax, or $XDG_CACHE_HOME/af3-cpu/jax).")
@click.option("--no-cache", is_flag=True, help="No compilation cache.")
@click.option("--exact", is_flag=True, help=EXACT_HELP)
@click.pass_context
def batch(ctx, inputs, output_dir, model_dir, db_dir, af3_dir, run_data_pipeline, stage, scheduler, scheduler_file, cluster, jobs, cores, memory,
          walltime, queue, account, workers, shard, print_sbatch, max_memory, retries, num_recycles, num_diffusion_samples, buckets, threads, precision,
          diffusion_precision, attention, cache_dir, no_cache, exact):
    """Predict many INPUTS (AF3 JSON files or folders of them), one task per input and seed.

    Runs on a local Dask cluster by default, on a running one with
    --scheduler, on SLURM/PBS with --cluster, or as one shard with --shard.
    Finished tasks are skipped when run again. Flags after `--` go to
    run_alphafold.py unchanged.
    """
    from af3_cpu_patch import predict as predict_module
    from af3_cpu_patch.batch import engines, runner, worker

    extra = ctx.meta.get("passthrough", ())
    settings = worker.Settings(
        output_dir=output_dir.expanduser().resolve(), model_dir=model_dir.expanduser().resolve(), af3_dir=af3_dir,
        db_dir=db_dir, buckets=buckets, num_recycles=num_recycles, num_diffusion_samples=num_diffusion_samples,
        precision=precision, diffusion_precision=diffusion_precision, attention=attention, threads=threads,
        cache_dir=_cache_dir(cache_dir, no_cache), extra=tuple(extra), exact=exact,
    )
    cluster_options = engines.ClusterOptions(cluster=cluster, jobs=jobs, cores=cores, memory=memory, walltime=walltime, queue=queue, account=account)
    if cluster and not print_sbatch and not cores:
        raise UsageProblem("--cluster needs --cores per job (e.g. --cores 16); --memory and --walltime come from the forecasts unless given")
    if print_sbatch or cluster:
        from af3_cpu_patch.batch import sizing

        # --time and --mem the user did not give, from the forecasts of the tasks still to run.
        sized = sizing.size_batch(cluster_options, [p.expanduser().resolve() for p in inputs], settings,
                                  run_data_pipeline and stage != "infer", jobs, for_workers=not print_sbatch)
        cluster_options = sized.options
    if print_sbatch:
        argv = _rerun_argv(ctx, drop=("print_sbatch", "jobs", "cores", "memory", "walltime", "queue", "account", "cluster", "shard"))
        log_dir = output_dir.expanduser().resolve() / ".af3-cpu" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)  # SLURM does not create the folder of --output itself
        retry = f"{sizing.retry_memory_gb(cluster_options.memory)}GB"
        click.echo(engines.sbatch_script(argv, jobs, cluster_options, str(log_dir), sized.notes, retry_memory=retry))
        return
    if sum(bool(x) for x in (scheduler, scheduler_file, cluster, shard)) > 1:
        raise UsageProblem("give at most one of --scheduler, --scheduler-file, --cluster and --shard")
    if exact:
        cpu_runtime.check_exact(precision, diffusion_precision, attention)
    if stage != "data":
        predict_module.check_model_dir(settings.model_dir)
        if not (scheduler or scheduler_file or cluster):
            # Workers started on this machine use this AF3: refuse it before planning, not in each worker after start-up.
            # Workers of a running cluster or of cluster jobs may see another AF3; they check their own.
            predict_module.check_output_terms(af3_checkout.find_checkout(af3_dir))
    if run_data_pipeline and stage != "infer":
        predict_module.check_databases(predict_module.PredictOptions(input=output_dir, model_dir=model_dir, output_dir=output_dir, db_dir=db_dir))
    if cluster:
        for note in sized.notes:
            click.echo(f"[af3-cpu batch] {note}", err=True)
    request = runner.Request(
        inputs=[p.expanduser().resolve() for p in inputs], settings=settings, run_data_pipeline=run_data_pipeline, stage=stage,
        retries=retries, workers=workers, scheduler=scheduler, scheduler_file=str(scheduler_file) if scheduler_file else None,
        cluster=cluster_options, shard=runner.parse_shard(shard) if shard else None, max_memory=max_memory,
    )
    summary = runner.run(request)
    sys.exit(1 if summary["counts"]["failed"] or summary["counts"]["rejected_inputs"] else 0)
