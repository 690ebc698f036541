"""Options and helpers shared by the ``af3-cpu`` commands."""

from __future__ import annotations

import dataclasses
import pathlib

import click

from af3_cpu_patch import predict
from af3_cpu_patch.host import cache_dirs

EXACT_HELP = (
    "AF3's own numbers: stock precision, attention and buckets (unless --buckets), and only the patches that keep "
    "stock's bits; output bit-identical to stock run_alphafold.py on this CPU (slower)."
)
AF3_DIR_HELP = "Root of DeepMind's alphafold3 checkout (holds run_alphafold.py). Default: $AF3_DIR, else found from the installed alphafold3."


def cache_dir(cache_dir: pathlib.Path | None, no_cache: bool) -> pathlib.Path | None:
    """The compilation cache ``--cache-dir``/``--no-cache`` ask for (predict and batch alike).

    A given ``--cache-dir`` is the parent of this CPU's and jax's subdirectory,
    as the default is (see :mod:`af3_cpu_patch.host.cache_dirs`): nodes of
    different CPUs can share one directory without mixing their programs.
    """
    if no_cache:
        return None
    return cache_dirs.compilation_cache(cache_dir.expanduser().resolve()) if cache_dir else predict.DEFAULT_CACHE


@dataclasses.dataclass
class Invocation:
    """What one ``af3-cpu`` invocation did, for :func:`af3_cpu_patch.cli.entry` (click's context object)."""

    ran_af3: bool = False


def mark_af3_run() -> None:
    """Record that this invocation runs AF3 (``entry`` then ends the process without teardown)."""
    invocation = click.get_current_context().find_object(Invocation)
    if invocation is not None:
        invocation.ran_af3 = True
