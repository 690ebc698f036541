"""``af3-cpu doctor``: can a CPU run start here, and if not, what to fix.

Each check is a line: ok / warn / FAIL with what was found and, on failure,
the fix.  Only FAIL lines make the exit code non-zero.
"""

from __future__ import annotations

import dataclasses
import pathlib

import af3_cpu_patch
from af3_cpu_patch import runtime
from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.af3 import install as af3_install
from af3_cpu_patch.random_weights import NOTICE
from af3_cpu_patch.engine.patch import Numerics
from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import cgroups, cpu_info, ticks
from af3_cpu_patch.host import limits as host_limits
from af3_cpu_patch.host import cache_dirs
from af3_cpu_patch.patches import CLI_PATCHES
from af3_cpu_patch.predict import DEFAULT_CACHE, check_model_dir


@dataclasses.dataclass
class Check:
    level: str  # "ok", "warn", "FAIL"
    what: str
    detail: str


def limit_checks() -> list[Check]:
    """Cores and memory as the process really has them, each with the limit it came from.

    Why the source: on a cluster node or in a container the machine's totals
    are not this process's; the line says which cgroup, scheduler variable
    or system number decides.
    """
    try:
        found = host_limits.limits()
    except UsageProblem as exc:  # a malformed SLURM/PBS variable
        return [Check("FAIL", "limits", str(exc))]
    checks = [Check("ok", "cores", f"{found.cores.value} usable cores ({found.cores.source})")]
    if found.memory is None or found.available is None:
        return checks + [Check("warn", "memory", "no limit readable (no /proc/meminfo): --max-memory is the only check")]
    gib = 2**30
    detail = (f"{found.available.value / gib:.1f} GiB available now ({found.available.source}); "
              f"limit {found.memory.value / gib:.1f} GiB ({found.memory.source})")
    if not found.memory.source.startswith("cgroup"):  # say that the cgroups were read too
        read = [f"v{chain.version} {chain.dirs[0]}" for chain in cgroups.chains("memory")]
        detail += f"; no tighter limit on cgroup {' or '.join(read)} or their parents" if read else ""
    return checks + [Check("ok", "memory", detail)]


def ccd_index_check(pickle_path: pathlib.Path) -> Check | None:
    """Where af3-cpu keeps the index it reads AF3's CCD through (lazy_ccd), or why it cannot."""

    if not pickle_path.is_file():
        return None
    index = cache_dirs.ccd_index_path(pickle_path)
    if index.is_file():
        return Check("ok", "CCD index", str(index))
    if cache_dirs.can_keep_ccd_index():
        return Check("ok", "CCD index", f"the first run builds it in {index.parent} (about 12 s and 550 MB, once)")
    return Check("warn", "CCD index", f"{cache_dirs.ccd_index_root()} cannot be written: every run loads AF3's whole CCD "
                 "(3 GB more memory); set XDG_CACHE_HOME to a writable directory")


def run_checks(model_dir: pathlib.Path | None, db_dirs: tuple[str, ...], af3_dir: str | None) -> list[Check]:
    checks: list[Check] = []
    checkout = None
    try:
        checkout = af3_checkout.find_checkout(af3_dir)
        install = checkout.install
        checks.append(Check("ok", "AlphaFold 3", install.describe()))
        checks.append(Check("ok", "run_alphafold.py", str(checkout.run_alphafold)))
    except UsageProblem as exc:
        install = af3_install.detect()
        install_problem = install.problem()
        if not install_problem:
            checks.append(Check("ok", "AlphaFold 3", install.describe()))
        checks.append(Check("FAIL", "AlphaFold 3" if install_problem else "run_alphafold.py", str(exc)))

    if install.found and install.is_deepmind:
        if install.data_built:
            checks.append(Check("ok", "CCD data", "built (build_data has run)"))
        else:
            checks.append(Check("FAIL", "CCD data", f"missing in {install.package_dir}: run AF3's build_data once"))
        index = ccd_index_check(install.package_dir / af3_install.CCD_PICKLE)
        if index is not None:
            checks.append(index)
        terms_problem = install.output_terms_problem(checkout.root if checkout is not None else None)
        checks.append(Check("FAIL", "output terms", terms_problem) if terms_problem else Check("ok", "output terms", f"{af3_install.OUTPUT_TERMS} in the package"))


    runtime.prepare()
    try:
        import jax
        import jaxlib

        devices = jax.devices("cpu")
        checks.append(Check("ok", "JAX", f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, backend cpu ({len(devices)} device)"))

        if ticks.prepare():
            checks.append(Check("ok", "compilation cache", f"{DEFAULT_CACHE}; runs with the progress bar are cached"))
        else:
            checks.append(Check("warn", "compilation cache", f"{DEFAULT_CACHE}; this jaxlib's FFI does not fit the progress ticks, "
                                "so only runs with --quiet are cached"))
    except Exception as exc:  # noqa: BLE001 - any failure here means no CPU run
        checks.append(Check("FAIL", "JAX", f"no CPU backend ({type(exc).__name__}: {exc}): pip install jax jaxlib"))

    checks.append(Check("ok", "CPU", cpu_info.summary()))
    checks += limit_checks()

    model_dir = model_dir or pathlib.Path.home() / "models"
    try:

        check_model_dir(model_dir)
        random = (model_dir / NOTICE).exists()
        checks.append(Check("warn" if random else "ok", "model weights", f"in {model_dir}" + (" (RANDOM weights: not for predictions)" if random else "")))
    except UsageProblem as exc:
        checks.append(Check("FAIL", "model weights", str(exc)))

    for db in db_dirs:
        path = pathlib.Path(db).expanduser()
        checks.append(Check("ok" if path.is_dir() else "FAIL", "databases", f"{path}" + ("" if path.is_dir() else " does not exist: fix --db-dir")))
    if not db_dirs:
        checks.append(Check("warn", "databases", "no --db-dir given: only inputs with MSAs and --no-run-data-pipeline can run"))

    if checkout is not None and install.data_built:
        checks += patch_checks(checkout)
    return checks


def patch_checks(checkout: af3_checkout.Checkout) -> list[Check]:
    """Import AF3 with the CLI's patches and report each one."""

    af3_cpu_patch.install(CLI_PATCHES)
    try:
        runtime.import_run_alphafold(checkout.root)
    except UsageProblem as exc:
        return [Check("FAIL", "AF3 import", str(exc))]
    bad = {"source did not match", "target not found", "error"}
    return [
        Check("warn" if str(r.status) in bad else "ok", f"patch {r.patch}",
              f"{r.status}" + (f" ({r.detail})" if r.detail else "") + f"; {r.effect()}" + ("" if r.numerics is Numerics.CHANGES else " (kept by --exact)"))
        for r in af3_cpu_patch.report()
    ]


def render(checks: list[Check]) -> str:
    width = max(len(c.what) for c in checks)
    lines = [f"{c.level:>4}  {c.what:<{width}}  {c.detail}" for c in checks]
    ok = not any(c.level == "FAIL" for c in checks)
    lines.append("")
    lines.append("A CPU run can start." if ok else "A CPU run cannot start: fix the FAIL lines above.")
    return "\n".join(lines)
