"""``af3-cpu doctor``: the checks of :mod:`af3_cpu_patch.doctor`, printed; exit 1 if any failed."""

from __future__ import annotations

import pathlib
import sys

import click

from af3_cpu_patch import doctor as checks_module
from af3_cpu_patch.cli import options


@click.command()
@click.option("--model-dir", type=click.Path(path_type=pathlib.Path), default=None, help="AF3 weights directory (default ~/models).")
@click.option("--db-dir", multiple=True, help="Genetic database directory to check (repeatable).")
@click.option("--af3-dir", default=None, help=options.AF3_DIR_HELP)
def doctor(model_dir, db_dir, af3_dir):
    """Tell whether a CPU run can work here and what to fix (exit 0 only if it can)."""
    checks = checks_module.run_checks(model_dir, tuple(db_dir), af3_dir)
    click.echo(checks_module.render(checks))
    sys.exit(1 if any(c.level == "FAIL" for c in checks) else 0)
