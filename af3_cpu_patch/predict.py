"""``af3-cpu predict``: AF3's own ``run_alphafold.main()`` on the CPU.

Not a re-implementation: the stock script is imported as a module (so the
import hooks patch it and AF3), its absl flags are set from our options plus
the CPU settings, and its ``main()`` is called.  AF3 writes into a temporary
sibling of the output directory; only a run that finished is moved into
place, so a failed run leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import re
import shutil
import sys
import time

from af3_cpu_patch import runtime
from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch import settings
from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import (
    cache_dirs,
    cpu_info,
    memory_forecast,
    search_threads,
    stops,
    ticks,
)
from af3_cpu_patch.patches import CLI_PATCHES, PROGRESS_PATCHES
from af3_cpu_patch.settings import CPU_BUCKETS, STOCK_BUCKETS, effective_buckets  # noqa: F401 - predict's API too

WEIGHTS_FILE = re.compile(r".*(\.[0-9]+)?\.bin(\.zst)?(\.[0-9]+)?$")

# Our option name -> run_alphafold.py flag, for options whose flag not every AF3 version has.
VERSIONED_FLAGS = {
    "num_recycles": "--num-recycles",
    "num_diffusion_samples": "--num-diffusion-samples",
    "num_seeds": "--num-seeds",
    "buckets": "--buckets",
}


DEFAULT_CACHE = cache_dirs.compilation_cache()  # per CPU and jax version: see cache_dirs


@dataclasses.dataclass
class PredictOptions:
    input: pathlib.Path
    model_dir: pathlib.Path
    output_dir: pathlib.Path
    db_dir: tuple[str, ...] = ()
    af3_dir: str | None = None
    run_data_pipeline: bool = True
    num_recycles: int | None = None
    num_diffusion_samples: int | None = None
    num_seeds: int | None = None
    buckets: str | None = None
    extra: tuple[str, ...] = ()
    quiet: bool = False
    threads: int | None = None
    precision: str = "auto"
    diffusion_precision: str = "auto"
    attention: str = "auto"
    cache_dir: pathlib.Path | None = DEFAULT_CACHE
    max_memory: str | None = None
    exact: bool = False  # AF3's own numbers: stock settings and buckets, only bit-identical patches


def _say(message: str, start: float, quiet: bool) -> None:
    if not quiet:
        elapsed = datetime.timedelta(seconds=int(time.monotonic() - start))
        print(f"[af3-cpu {elapsed}] {message}", flush=True)


def json_files(path: pathlib.Path) -> list[pathlib.Path]:
    """An input path as AF3 reads it: a JSON file, or the .json files of a folder."""
    return sorted(p for p in path.iterdir() if p.suffix == ".json") if path.is_dir() else [path]


def check_input(path: pathlib.Path) -> list[pathlib.Path]:
    """The input JSON file(s); a one-line problem for anything unreadable."""
    if not path.exists():
        raise UsageProblem(f"input {path} does not exist: give an AF3 input JSON file or a directory of them")
    files = json_files(path)
    if not files:
        raise UsageProblem(f"input directory {path} has no .json files: put AF3 input JSON files in it")
    for file in files:
        try:
            json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageProblem(f"input {file} is not valid JSON ({exc}): fix the file (AF3 input format)") from None
    return files


def check_memory(files: list[pathlib.Path], options: PredictOptions) -> list[memory_forecast.Forecast]:
    """Refuse inputs whose forecast peak memory exceeds ``--max-memory`` (default: what is available).

    The refusal names where the limit came from (a cgroup file, a SLURM
    variable, /proc/meminfo), so a user can tell which allocation to raise.
    """
    limit = memory_forecast.budget(options.max_memory)
    forecasts = []
    for file in files:
        data = json.loads(file.read_text())
        if not isinstance(data, dict):  # AlphaFold Server format: AF3 reads it, we do not forecast it
            continue
        forecast = memory_forecast.forecast(data, effective_buckets(options.buckets, options.exact))
        forecasts.append(forecast)
        if limit.gb is not None and forecast.peak_gb > limit.gb:
            raise UsageProblem(memory_forecast.too_big(forecast, limit))
    return forecasts


def check_af3_accepts(path: pathlib.Path) -> None:
    """Parse the input(s) with AF3's own loader before anything runs or is written."""
    from alphafold3.common import folding_input

    loader = folding_input.load_fold_inputs_from_dir if path.is_dir() else folding_input.load_fold_inputs_from_path
    try:
        for _ in loader(path):
            pass
    except Exception as exc:  # noqa: BLE001 - AF3 raises ValueError, KeyError, TypeError... for bad inputs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageProblem(f"AF3 rejected the input {path}: {first}: fix it (see AF3's docs/input.md)") from None


def check_model_dir(model_dir: pathlib.Path) -> None:
    if not model_dir.is_dir():
        raise UsageProblem(f"model directory {model_dir} does not exist: pass --model-dir with AF3's weights (af3.bin.zst)")
    if not any(WEIGHTS_FILE.fullmatch(p.name) for p in model_dir.iterdir() if p.is_file()):
        raise UsageProblem(
            f"no AF3 weights (af3.bin or af3.bin.zst) in {model_dir}: put the weights there "
            "(to check an install without them: af3-cpu random-weights DIR)"
        )


def check_databases(options: PredictOptions) -> None:
    if not options.run_data_pipeline:
        return
    dirs = [pathlib.Path(d).expanduser() for d in options.db_dir] or [pathlib.Path.home() / "public_databases"]
    if not any(d.is_dir() for d in dirs):
        raise UsageProblem(
            f"the data pipeline is on but no database directory exists ({', '.join(map(str, dirs))}): pass --db-dir, "
            "or --no-run-data-pipeline with MSAs and templates given in the input JSON"
        )


def check_versioned_options(options: PredictOptions, checkout: af3_checkout.Checkout) -> None:
    """Fail early (before importing AF3) on options the installed run_alphafold.py lacks."""
    for attr, option in VERSIONED_FLAGS.items():
        if getattr(options, attr) in (None, "stock"):
            continue
        if not checkout.has_flag(attr):
            version = checkout.install.version or "of this checkout"
            raise UsageProblem(f"{option} is not supported by AF3 {version} (its run_alphafold.py has no --{attr}): drop the option or upgrade AF3")


def check_output_terms(checkout: af3_checkout.Checkout) -> None:
    """Refuse, before inference, an AF3 package that run_alphafold.py cannot write outputs from."""
    problem = checkout.install.output_terms_problem(checkout.root)
    if problem:
        raise UsageProblem(problem)


def af3_flags(options: PredictOptions, checkout: af3_checkout.Checkout, output_dir: pathlib.Path) -> list[str]:
    """The absl argv for run_alphafold.main(): our options, then the CPU settings, then pass-through."""
    input_flag = "--input_dir" if options.input.is_dir() else "--json_path"
    argv = [
        str(checkout.run_alphafold),
        f"{input_flag}={options.input}",
        f"--model_dir={options.model_dir}",
        f"--output_dir={output_dir}",
        f"--run_data_pipeline={str(options.run_data_pipeline).lower()}",
        "--flash_attention_implementation=xla",
    ]
    if checkout.has_flag("jax_backend"):
        argv.append("--jax_backend=cpu")
    argv += [f"--db_dir={d}" for d in options.db_dir]
    if options.run_data_pipeline:  # AF3 sizes HMMER to the node, not to a quota, and runs 4 searches at once

        argv += search_threads.flags(cpu_info.usable_cores(), checkout.has_flag, options.extra)
    for attr in VERSIONED_FLAGS:
        value = getattr(options, attr)
        if attr == "buckets" and value == "stock":
            continue
        if attr == "buckets" and value is None and checkout.has_flag("buckets") and not options.exact:
            value = CPU_BUCKETS
        if value is not None:
            argv.append(f"--{attr}={value}")
    if options.cache_dir is not None and checkout.has_flag("jax_compilation_cache_dir"):
        if options.quiet or ticks.cacheable():
            # One folder per settings: what they change is traced into the programs (see settings.Settings.key).
            argv.append(f"--jax_compilation_cache_dir={options.cache_dir / settings.current().key()}")
        else:  # JAX caches no program with jax.debug.callback, the ticks' fallback
            print("af3-cpu: note: progress ticks fell back to jax.debug.callback; no compilation cache "
                  "this run (--quiet uses it)", file=sys.stderr, flush=True)
    return argv + list(options.extra)


@contextlib.contextmanager
def staged_output(final: pathlib.Path):
    """Yield a temporary sibling of ``final``; on success rename each job folder AF3 wrote into ``final``.

    Why one ``os.rename`` per job folder: a job folder is what a user opens,
    and a rename on one filesystem (the staging folder is a sibling) makes it
    appear whole or not at all; moving files one by one let an interruption
    leave half a result in place.  The renames run as one critical block
    (:mod:`af3_cpu_patch.host.stops`): a signal arriving then waits until
    every folder is in place.  On an error or a stop the staging folder is
    removed; a stop's message names what was kept (job folders already
    renamed) or says that nothing was written.  A job folder whose name is
    taken gets AF3's own ``_<timestamp>`` suffix.
    """

    final = final.expanduser().resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.af3-cpu-partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    published: list[pathlib.Path] = []

    def kept() -> str:
        if not published:
            return f"nothing was written to {final}"
        return f"kept the finished job folder(s) {', '.join(p.name for p in published)} in {final}; nothing else was written"

    def remove_staging(stop) -> str:  # from the stop watcher, while the main thread is stuck in AF3's native code
        shutil.rmtree(staging, ignore_errors=True)
        return kept()

    try:
        with stops.on_stop(remove_staging):
            yield staging
            with stops.critical():
                _publish_jobs(staging, final, published)
    except BaseException as exc:
        with stops.held():
            shutil.rmtree(staging, ignore_errors=True)
        stop = stops.as_stop(exc)
        if stop is None:
            raise
        stop.note = kept()
        if stop is exc:
            raise
        raise stop from exc
    staging.rmdir()


def _publish_jobs(staging: pathlib.Path, final: pathlib.Path, published: list[pathlib.Path]) -> None:
    """Rename every entry of ``staging`` into ``final``, each by one ``os.rename``; all or none on an error."""
    created = not final.exists()
    final.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    moved: list[tuple[pathlib.Path, pathlib.Path]] = []
    try:
        for entry in sorted(staging.iterdir()):
            target = final / entry.name
            if target.exists():  # AF3's own convention for an existing job folder
                target = final / f"{entry.name}_{stamp}"
                count = 1
                while target.exists():
                    target, count = final / f"{entry.name}_{stamp}_{count}", count + 1
            os.rename(entry, target)
            moved.append((entry, target))
            published.append(target)
    except OSError:
        for entry, target in reversed(moved):  # a failed run leaves nothing in place: undo the renames
            os.rename(target, entry)
        published.clear()
        if created:
            with contextlib.suppress(OSError):
                final.rmdir()
        raise


def run(options: PredictOptions) -> pathlib.Path:
    """Run AF3's pipeline on the CPU; returns the output directory."""
    start = time.monotonic()
    files = check_input(options.input)
    forecasts = check_memory(files, options)
    check_model_dir(options.model_dir)
    check_databases(options)
    checkout = af3_checkout.find_checkout(options.af3_dir)
    check_versioned_options(options, checkout)
    check_output_terms(checkout)
    _say(f"{checkout.install.describe()}; run_alphafold.py from {checkout.root}", start, options.quiet)
    for forecast in forecasts:
        _say(forecast.describe(), start, options.quiet)


    _say("importing AF3 (patched for CPU)", start, options.quiet)
    patches = CLI_PATCHES + (() if options.quiet else PROGRESS_PATCHES)
    run, run_alphafold = runtime.start_af3(
        checkout.root, patches, precision=options.precision, diffusion_precision=options.diffusion_precision,
        attention=options.attention, exact=options.exact, buckets=effective_buckets(options.buckets, options.exact),
        threads=options.threads,
    )
    described = (
        "--exact: AF3's own numerics and buckets, only patches that keep stock's bits" if options.exact else run.describe()
    )
    _say(f"{run.threads} threads, {described}", start, options.quiet)
    if not options.quiet:
        ticks.prepare()
    check_af3_accepts(options.input)


    # SIGTERM/SIGINT/SIGHUP from here on remove the staging folder and end the run with 128 + signal (stops).
    with stops.guard(), staged_output(options.output_dir) as staging:
        argv = af3_flags(options, checkout, staging)
        runtime.parse_flags(argv)
        _say("running AF3's run_alphafold.main() on the CPU", start, options.quiet)
        with runtime.quiet_known_noise():
            run_alphafold.main(argv)
        _say(f"writing results to {options.output_dir}", start, options.quiet)
    _say("done", start, options.quiet)
    return options.output_dir
