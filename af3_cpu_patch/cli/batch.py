"""``af3-cpu batch``: options -> :func:`af3_cpu_patch.batch.runner.run` (Dask, dask-jobqueue, shards, sbatch arrays)."""

from __future__ import annotations

import pathlib
import sys

import click

from af3_cpu_patch import predict as predict_job
from af3_cpu_patch import settings
from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.batch import engines, runner, sizing, worker
from af3_cpu_patch.cli import options
from af3_cpu_patch.errors import UsageProblem


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


@click.command(cls=_PassThroughCommand)
@click.argument("inputs", metavar="INPUTS...", nargs=-1, required=True, type=click.Path(path_type=pathlib.Path))
@click.option("--output-dir", type=click.Path(path_type=pathlib.Path), required=True, help="One folder per input; re-running resumes.")
@click.option("--model-dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path.home() / "models", show_default=True, help="AF3 weights directory.")
@click.option("--db-dir", multiple=True, help="Genetic database directory (repeatable), for the data pipeline.")
@click.option("--af3-dir", default=None, help=options.AF3_DIR_HELP)
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
@click.option("--precision", type=click.Choice(settings.PRECISION_CHOICES), default="auto", show_default=True)
@click.option("--diffusion-precision", type=click.Choice(settings.PRECISION_CHOICES), default="auto", show_default=True)
@click.option("--attention", type=click.Choice(settings.ATTENTION_CHOICES), default="auto", show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=pathlib.Path), default=None, help="Shared JAX compilation cache; runs use a subdirectory of it per CPU type and jax version, as predict does (default ~/.cache/af3-cpu/jax, or $XDG_CACHE_HOME/af3-cpu/jax).")
@click.option("--no-cache", is_flag=True, help="No compilation cache.")
@click.option("--exact", is_flag=True, help=options.EXACT_HELP)
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
    extra = ctx.meta.get("passthrough", ())
    batch_options = worker.BatchOptions(
        output_dir=output_dir.expanduser().resolve(), model_dir=model_dir.expanduser().resolve(), af3_dir=af3_dir,
        db_dir=db_dir, buckets=buckets, num_recycles=num_recycles, num_diffusion_samples=num_diffusion_samples,
        precision=precision, diffusion_precision=diffusion_precision, attention=attention, threads=threads,
        cache_dir=options.cache_dir(cache_dir, no_cache), extra=tuple(extra), exact=exact,
    )
    cluster_options = engines.ClusterOptions(cluster=cluster, jobs=jobs, cores=cores, memory=memory, walltime=walltime, queue=queue, account=account)
    if cluster and not print_sbatch and not cores:
        raise UsageProblem("--cluster needs --cores per job (e.g. --cores 16); --memory and --walltime come from the forecasts unless given")
    if print_sbatch or cluster:
        # --time and --mem the user did not give, from the forecasts of the tasks still to run.
        sized = sizing.size_batch(cluster_options, [p.expanduser().resolve() for p in inputs], batch_options,
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
        settings.check_exact(precision, diffusion_precision, attention)
    if stage != "data":
        predict_job.check_model_dir(batch_options.model_dir)
        if not (scheduler or scheduler_file or cluster):
            # Workers started on this machine use this AF3: refuse it before planning, not in each worker after start-up.
            # Workers of a running cluster or of cluster jobs may see another AF3; they check their own.
            predict_job.check_output_terms(af3_checkout.find_checkout(af3_dir))
    if run_data_pipeline and stage != "infer":
        predict_job.check_databases(predict_job.PredictOptions(input=output_dir, model_dir=model_dir, output_dir=output_dir, db_dir=db_dir))
    if cluster:
        for note in sized.notes:
            click.echo(f"[af3-cpu batch] {note}", err=True)
    request = runner.Request(
        inputs=[p.expanduser().resolve() for p in inputs], settings=batch_options, run_data_pipeline=run_data_pipeline, stage=stage,
        retries=retries, workers=workers, scheduler=scheduler, scheduler_file=str(scheduler_file) if scheduler_file else None,
        cluster=cluster_options, shard=runner.parse_shard(shard) if shard else None, max_memory=max_memory,
    )
    summary = runner.run(request)
    sys.exit(1 if summary["counts"]["failed"] or summary["counts"]["rejected_inputs"] else 0)
