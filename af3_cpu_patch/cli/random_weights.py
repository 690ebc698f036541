"""``af3-cpu random-weights``: :func:`af3_cpu_patch.random_weights.write`."""

from __future__ import annotations

import pathlib

import click

from af3_cpu_patch import random_weights as rw
from af3_cpu_patch.cli import options


@click.command("random-weights")
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=pathlib.Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--af3-dir", default=None, help=options.AF3_DIR_HELP)
@click.option("--fill-zero-init", is_flag=True, help="Also give AF3's zero-initialised layers random values, so every layer affects the output (for comparing precisions).")
def random_weights(out_dir, seed, af3_dir, fill_zero_init):
    """Write RANDOM AF3 weights of the real shapes to DIR -- NOT FOR PREDICTIONS.

    For checking an install end to end and for benchmarks, without the gated
    weights: structures predicted with them are meaningless.
    """
    path = rw.write(out_dir, seed=seed, af3_dir=af3_dir, fill_zero=fill_zero_init)
    click.echo(f"wrote RANDOM weights (NOT FOR PREDICTIONS) to {path}")
