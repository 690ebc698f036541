"""``af3-cpu predict``: options -> :func:`af3_cpu_patch.predict.run`."""

from __future__ import annotations

import pathlib

import click

from af3_cpu_patch import predict as predict_job
from af3_cpu_patch import settings
from af3_cpu_patch.cli import options


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=pathlib.Path))
@click.option("--model-dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path.home() / "models", show_default=True, help="AF3 weights directory.")
@click.option("--db-dir", multiple=True, help="Genetic database directory (repeatable), for the data pipeline.")
@click.option("--output-dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path("af3_output"), show_default=True)
@click.option("--af3-dir", default=None, help=options.AF3_DIR_HELP)
@click.option("--run-data-pipeline/--no-run-data-pipeline", default=True, show_default=True)
@click.option("--num-recycles", type=click.IntRange(min=1), default=None, help="AF3 default: 10 (AF3 takes 1 or more).")
@click.option("--num-diffusion-samples", type=click.IntRange(min=1), default=None, help="AF3 default: 5.")
@click.option("--num-seeds", type=click.IntRange(min=1), default=None, help="Expand each input to this many seeds.")
@click.option("--buckets", default=None, help="Comma-separated token buckets, as AF3's --buckets; 'stock' for AF3's own. Default: CPU-sized buckets from 16 tokens.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for XLA. Default: every core this process may use (affinity mask, cgroup CPU quota, SLURM/PBS allocation; af3-cpu doctor says which).")
@click.option("--precision", type=click.Choice(settings.PRECISION_CHOICES), default="auto", show_default=True, help="Trunk precision; auto: bf16 on CPUs with native bf16, else f32.")
@click.option("--diffusion-precision", type=click.Choice(settings.PRECISION_CHOICES), default="auto", show_default=True, help="Diffusion head's default-precision products; bf16: one bf16 pass as on a TPU (faster with native bf16); auto: bf16 on CPUs with native bf16, else f32 (CPU-stock AF3).")
@click.option("--attention", type=click.Choice(settings.ATTENTION_CHOICES), default="auto", show_default=True, help="Trunk attention; auto: xla_chunked where AF3 uses tokamax (v3.0.2+), else xla.")
@click.option("--cache-dir", type=click.Path(path_type=pathlib.Path), default=None, help="JAX compilation cache, so the next run of the same bucket skips XLA compilation. Runs use a subdirectory of it per CPU type and jax version (e.g. x86_64-fma-avx2-<hash>-jax0.5.3-jaxlib0.5.3), so machines with different CPUs can share it. Default: ~/.cache/af3-cpu/jax ($XDG_CACHE_HOME/af3-cpu/jax).")
@click.option("--no-cache", is_flag=True, help="No compilation cache.")
@click.option("--quiet", is_flag=True, help="No progress bar: only AF3's own output.")
@click.option("--max-memory", default=None, metavar="GB|none", help="Refuse inputs whose forecast peak memory exceeds this. Default: the memory available now; 'none': no check.")
@click.option("--exact", is_flag=True, help=options.EXACT_HELP)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUN_ALPHAFOLD_FLAGS]")
def predict(input_path, model_dir, db_dir, output_dir, af3_dir, run_data_pipeline, num_recycles, num_diffusion_samples, num_seeds, buckets, threads, precision, diffusion_precision, attention, cache_dir, no_cache, quiet, max_memory, exact, extra):
    """Predict INPUT (an AF3 input JSON file or a directory of them) on the CPU.

    Runs AF3's own run_alphafold.py with the CPU fixes applied; flags after
    `--` are passed to it unchanged.
    """
    job = predict_job.PredictOptions(
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
        cache_dir=options.cache_dir(cache_dir, no_cache),
        exact=exact,
    )
    options.mark_af3_run()
    out = predict_job.run(job)
    click.echo(f"AF3 output written to {out}")
