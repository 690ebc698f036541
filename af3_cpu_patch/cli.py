"""The ``af3-cpu`` command: thin click front end.

Every failure a user can cause ends in one line on stderr naming the problem
and the fix, and a non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import pathlib
import sys
import traceback

import click

from af3_cpu_patch.af3_checkout import UsageProblem

AF3_DIR_HELP = "Root of DeepMind's alphafold3 checkout (holds run_alphafold.py). Default: $AF3_DIR, else found from the installed alphafold3."


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"af3-cpu: error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns exceptions into one-line errors."""

    def invoke(self, ctx):
        debug = "--debug" in sys.argv[1:] or bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except UsageProblem as exc:
            _fail(str(exc), 2, debug)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written", 130, debug)
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            from af3_cpu_patch.result_check import NonFiniteResult

            if isinstance(exc, NonFiniteResult):
                _fail(str(exc), 1, debug)
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail(f"{type(exc).__name__}: {detail} (nothing was written; --debug shows the traceback)", 1, debug)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="af3-cpu-patch")
def main(debug: bool) -> None:
    """Run an unmodified DeepMind AlphaFold 3 on CPUs."""


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=pathlib.Path))
@click.option("--model-dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path.home() / "models", show_default=True, help="AF3 weights directory.")
@click.option("--db-dir", multiple=True, help="Genetic database directory (repeatable), for the data pipeline.")
@click.option("--output-dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path("af3_output"), show_default=True)
@click.option("--af3-dir", default=None, help=AF3_DIR_HELP)
@click.option("--run-data-pipeline/--no-run-data-pipeline", default=True, show_default=True)
@click.option("--num-recycles", type=click.IntRange(min=0), default=None, help="AF3 default: 10.")
@click.option("--num-diffusion-samples", type=click.IntRange(min=1), default=None, help="AF3 default: 5.")
@click.option("--num-seeds", type=click.IntRange(min=1), default=None, help="Expand each input to this many seeds.")
@click.option("--buckets", default=None, help="Comma-separated token buckets, as AF3's --buckets; 'stock' for AF3's own. Default: CPU-sized buckets from 32 tokens.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for XLA. Default: every core this process may use (affinity and cgroup quota).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "f32"]), default="auto", show_default=True, help="Trunk precision; auto: bf16 on CPUs with native bf16, else f32.")
@click.option("--cache-dir", type=click.Path(path_type=pathlib.Path), default=None, help="JAX compilation cache (default ~/.cache/af3-cpu/jax); used with --quiet, as programs with progress callbacks cannot be cached.")
@click.option("--no-cache", is_flag=True, help="No compilation cache.")
@click.option("--quiet", is_flag=True, help="No progress bar: only AF3's own output.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUN_ALPHAFOLD_FLAGS]")
def predict(input_path, model_dir, db_dir, output_dir, af3_dir, run_data_pipeline, num_recycles, num_diffusion_samples, num_seeds, buckets, threads, precision, cache_dir, no_cache, quiet, extra):
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
        cache_dir=None if no_cache else (cache_dir.expanduser().resolve() if cache_dir else predict_module.DEFAULT_CACHE),
    )
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
def random_weights(out_dir, seed, af3_dir):
    """Write RANDOM AF3 weights of the real shapes to DIR -- NOT FOR PREDICTIONS.

    For checking an install end to end and for benchmarks, without the gated
    weights: structures predicted with them are meaningless.
    """
    from af3_cpu_patch import random_weights as rw

    path = rw.write(out_dir, seed=seed, af3_dir=af3_dir)
    click.echo(f"wrote RANDOM weights (NOT FOR PREDICTIONS) to {path}")
