"""The ``af3-cpu`` command: a click group of one module per command (thin: options in, a job module does the work).

Every failure a user can cause ends in one line on stderr naming the problem
and the fix, and a non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback

import click

from af3_cpu_patch.cli import batch as batch_command
from af3_cpu_patch.cli import options
from af3_cpu_patch.cli import doctor as doctor_command
from af3_cpu_patch.cli import predict as predict_command
from af3_cpu_patch.cli import random_weights as random_weights_command
from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import stops
from af3_cpu_patch.patches.check_results import NonFiniteResult


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
            if isinstance(exc, NonFiniteResult):
                _fail(str(exc), 1, debug)
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail(f"{type(exc).__name__}: {detail} (nothing was written; --debug shows the traceback)", 1, debug)


def entry() -> None:
    """The ``af3-cpu`` command: ``main``, and after a finished AF3 run an exit without interpreter teardown.

    Why: after a prediction the interpreter frees JAX's weights, compiled
    programs, thread pools and every module one by one before the process
    ends, about a second of a small run for nothing (the OS takes the memory
    back at once).  Output is written and moved into place by then; stdout,
    stderr and logging are flushed first.  In-process callers of ``main``
    (tests, scripts) get the normal ``SystemExit``.
    """
    invocation = options.Invocation()
    try:
        main(obj=invocation)
        code = 0
    except SystemExit as exc:
        code = exc.code
    if not invocation.ran_af3:
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


main.add_command(predict_command.predict)
main.add_command(doctor_command.doctor)
main.add_command(random_weights_command.random_weights)
main.add_command(batch_command.batch)


