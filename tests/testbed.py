"""Real, unmodified DeepMind AlphaFold 3 installs for the tests, built from ``../shared/af3``.

CI cannot reach GitHub, so ``../shared/af3`` holds ``git archive``s of AF3's
tags and the PDB's Chemical Component Dictionary.  This module assembles
working installs from them in a cache directory (:func:`cache_root`), never in
the project tree, and the tests import AF3 from there:

``trees/<name>``
    The unpacked checkout, plus what ``pip install`` of it would put into
    ``src/alphafold3``: the C++ extension (taken from PyPI's cp312 wheel of
    ``alphafold3-colabfold``, which works with every tag here, so nothing is
    compiled), ``OUTPUT_TERMS_OF_USE.md`` and ``build_data``'s CCD pickles
    (hard links into ``ccd/``).
``venvs/<group>``
    One Python 3.12 environment per dependency set, installed by uv from the
    lock files in ``tests/testbed_requirements`` (AF3's CPU dependencies at the
    versions of upstream's ``uv.lock``, plus the plugin's); its site-packages
    has ``share/libcifpp/components.cif``, where every tag's ``build_data``
    finds it (v3.0.0 - v3.0.1 look nowhere else).
``ccd/<group>``
    ``build_data``'s output (11 GB peak, so one at a time), made once per group
    of tags whose generator writes the same pickles.
``weights/plain``, ``weights/filled``
    Random weights of the real shapes, as ``af3-cpu random-weights`` writes
    them without and with ``--fill-zero-init``, from one initialisation.

Every product is made in a temporary sibling, renamed into place, then
stamped with the key of everything it was made from (archive digests, lock
file, :data:`BUILDER_VERSION`).  A product whose stamp is missing or differs is
made again, so an interrupted build never looks complete, a changed archive
rebuilds only what depends on it, and a warm build only reads stamps.

    python -m tests.testbed build [--versions 3.0.4,main] [--no-weights]
    python -m tests.testbed status
    python -m tests.testbed lock     # re-resolve tests/testbed_requirements/*.txt

The test process imports this module, so it uses only the standard library.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import typing
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tests" / "testbed_requirements"

VERSIONS = ("3.0.0", "3.0.1", "3.0.2", "3.0.3", "3.0.4", "main")

# Part of every stamp: bump it when the recipe of a product changes.
BUILDER_VERSION = 1

# The dependency set (lock file in tests/testbed_requirements) of each tree.
VENV_GROUP = {
    "3.0.0": "v3.0.0-v3.0.1",
    "3.0.1": "v3.0.0-v3.0.1",
    "3.0.2": "v3.0.2-v3.0.3",
    "3.0.3": "v3.0.2-v3.0.3",
    "3.0.4": "v3.0.4",
    "main": "main",  # dm-haiku 0.0.17, v3.0.4 pins 0.0.16
}

# Trees whose build_data writes the same pickles from the same CCD.  The
# build_data code differs between tags only in where it finds components.cif,
# except ccd_pickle_gen.py: v3.0.0 - v3.0.1 store each CIF field as a tuple,
# later tags as a list (``value.to_dict()``); the pickles differ (552 vs 514 MB).
CCD_GROUP = {
    "3.0.0": "v3.0.0-v3.0.1",
    "3.0.1": "v3.0.0-v3.0.1",
    "3.0.2": "v3.0.2-main",
    "3.0.3": "v3.0.2-main",
    "3.0.4": "v3.0.2-main",
    "main": "v3.0.2-main",
}
CCD_PICKLES = ("ccd.pickle", "chemical_component_sets.pickle")  # in build_data's order
CONVERTERS = pathlib.Path("src/alphafold3/constants/converters")

# The random weights come from this tree, with the CLI's default seed.
WEIGHTS_VERSION = "3.0.4"
WEIGHTS_SEED = 0

COLABFOLD_WHEEL = "alphafold3-colabfold==3.1.18"
CPP_EXTENSION = "alphafold3/cpp.cpython-312-x86_64-linux-gnu.so"
OUTPUT_TERMS = "OUTPUT_TERMS_OF_USE.md"
UV = "uv==0.13.8"
PYTHON = "3.12"


class BuildError(Exception):
    """The test bed cannot be built here; the message says why."""


@dataclasses.dataclass(frozen=True)
class Tree:
    name: str  # "3.0.4" or "main"
    root: pathlib.Path  # the unpacked checkout (has run_alphafold.py, src/alphafold3)
    src: pathlib.Path  # root / "src" (goes on PYTHONPATH)
    python: pathlib.Path  # the venv interpreter with this tree's dependencies and the plugin's
    data_built: bool  # ccd pickles present


# ---------------------------------------------------------------- locations


def shared_dir() -> pathlib.Path | None:
    """``../shared/af3`` ($AF3_CPU_SHARED_AF3) if it holds the CCD and at least one archive, else None."""
    path = pathlib.Path(os.environ.get("AF3_CPU_SHARED_AF3") or ROOT.parent / "shared" / "af3").expanduser()
    if (path / "components.cif.zst").is_file() and any(_archive(path, v) for v in VERSIONS):
        return path
    return None


def cache_root() -> pathlib.Path:
    """$AF3_CPU_TESTBED, else ``${XDG_CACHE_HOME:-~/.cache}/af3-cpu-testbed``."""
    if os.environ.get("AF3_CPU_TESTBED"):
        return pathlib.Path(os.environ["AF3_CPU_TESTBED"]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser().absolute() / "af3-cpu-testbed"


def _archive(shared: pathlib.Path, version: str) -> pathlib.Path | None:
    """``alphafold3-v<version>.tar.gz``; for main the newest ``alphafold3-main-<commit>.tar.gz``."""
    if version != "main":
        path = shared / f"alphafold3-v{version}.tar.gz"
        return path if path.is_file() else None
    found = sorted(shared.glob("alphafold3-main-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _tree_dir(version: str) -> pathlib.Path:
    return cache_root() / "trees" / version


def _venv_dir(version: str) -> pathlib.Path:
    return cache_root() / "venvs" / VENV_GROUP[version]


def _ccd_dir(version: str) -> pathlib.Path:
    return cache_root() / "ccd" / CCD_GROUP[version]


def _components_cif() -> pathlib.Path:
    return cache_root() / "ccd" / "libcifpp" / "components.cif"  # its directory is a LIBCIFPP_DATA_DIR


def _weights_dir(filled: bool) -> pathlib.Path:
    return cache_root() / "weights" / ("filled" if filled else "plain")


def _python_of(venv: pathlib.Path) -> pathlib.Path:
    return venv / "bin" / "python"


# ------------------------------------------------------------------- stamps


@functools.lru_cache(maxsize=None)
def _sha256(path: pathlib.Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _file_key(path: pathlib.Path) -> dict:
    """A file's name and digest: a copy of shared/ elsewhere (new mtimes) keeps the same key."""
    stat = path.stat()
    return {"name": path.name, "sha256": _sha256(path, stat.st_size, stat.st_mtime_ns)}


def _stamp(product: pathlib.Path, step: str) -> pathlib.Path:
    """``<product>.<step>.json``: a product can carry stamps of several steps (a tree: built, smoke-checked)."""
    return product.with_name(f"{product.name}.{step}.json")


def _read_stamp(product: pathlib.Path, step: str = "build") -> dict | None:
    try:
        return json.loads(_stamp(product, step).read_text())
    except (OSError, ValueError):
        return None


def _is_current(product: pathlib.Path, key: dict, step: str = "build") -> bool:
    stamp = _read_stamp(product, step)
    return product.exists() and stamp is not None and stamp.get("key") == key


def _write_stamp(product: pathlib.Path, key: dict, step: str = "build", **info) -> None:
    path = _stamp(product, step)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"key": key, **info}, indent=1, sort_keys=True))
    partial.replace(path)


@contextlib.contextmanager
def _building(product: pathlib.Path):
    """Yield an empty temporary sibling of ``product``; on success it replaces ``product``.

    The old stamp goes first, so a build interrupted anywhere leaves a
    product without a stamp, which the next build makes again.
    """
    _stamp(product, "build").unlink(missing_ok=True)
    tmp = product.with_name(product.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(product, ignore_errors=True)
    tmp.rename(product)


# --------------------------------------------------------------------- keys


def _lock_file(version: str) -> pathlib.Path:
    return REQUIREMENTS / f"{VENV_GROUP[version]}.txt"


def _venv_key(version: str) -> dict:
    return {"builder": BUILDER_VERSION, "python": PYTHON, "lock": _file_key(_lock_file(version))}


def _cif_key(shared: pathlib.Path) -> dict:
    return {"builder": BUILDER_VERSION, "ccd": _file_key(shared / "components.cif.zst")}


def _ccd_key(shared: pathlib.Path, version: str) -> dict:
    # Any tree of the group writes the same pickles, so which one did is not part of the key.
    return {"builder": BUILDER_VERSION, "group": CCD_GROUP[version], "cpp": COLABFOLD_WHEEL, **_cif_key(shared)}


def _tree_key(shared: pathlib.Path, version: str) -> dict:
    return {
        "builder": BUILDER_VERSION,
        "archive": _file_key(_archive(shared, version)),
        "cpp": COLABFOLD_WHEEL,
        "ccd": _ccd_key(shared, version),
    }


def _smoke_key(shared: pathlib.Path, version: str) -> dict:
    return {"tree": _tree_key(shared, version), "venv": _venv_key(version)}


def _weights_key(shared: pathlib.Path) -> dict:
    return {
        "builder": BUILDER_VERSION,
        "tree": _tree_key(shared, WEIGHTS_VERSION),
        "venv": _venv_key(WEIGHTS_VERSION),
        "random_weights": _file_key(ROOT / "af3_cpu_patch" / "random_weights.py"),
        "seed": WEIGHTS_SEED,
    }


# ------------------------------------------------------------ public queries


def tree(version: str) -> Tree | None:
    """The built, smoke-checked tree of ``version`` with its interpreter, or None (never builds)."""
    if version not in VERSIONS:
        raise ValueError(f"unknown AF3 version {version!r}: one of {', '.join(VERSIONS)}")
    shared = shared_dir()
    if shared is None or _archive(shared, version) is None:
        return None
    root, venv = _tree_dir(version), _venv_dir(version)
    current = (
        _is_current(root, _tree_key(shared, version))
        and _is_current(venv, _venv_key(version))
        and _is_current(root, _smoke_key(shared, version), "smoke")
        and _python_of(venv).exists()  # its base interpreter may have gone
    )
    if not current:
        return None
    data = all((root / CONVERTERS / name).is_file() for name in CCD_PICKLES)
    return Tree(version, root, root / "src", _python_of(venv), data)


def model_dir(filled: bool = False) -> pathlib.Path | None:
    """The random weights directory (``af3.bin`` in it); ``filled``: as ``--fill-zero-init`` writes them."""
    shared = shared_dir()
    if shared is None or _archive(shared, WEIGHTS_VERSION) is None:
        return None
    path = _weights_dir(filled)
    return path if _is_current(path, _weights_key(shared)) else None


def skip_reason() -> str | None:
    """Why tests of a real AF3 cannot run here, or None.

    None once any tree is built: a test of a version that is not built gets
    None from :func:`tree` and may build it.
    """
    if shared_dir() is None:
        where = os.environ.get("AF3_CPU_SHARED_AF3") or ROOT.parent / "shared" / "af3"
        return f"no AF3 archives at {where} (set AF3_CPU_SHARED_AF3 to the directory that holds them)"
    if not any(tree(version) for version in VERSIONS):
        return f"the AF3 test bed in {cache_root()} is not built: run python -m tests.testbed build"
    return None


# ------------------------------------------------------------------ running


def _env(pythonpath: list[pathlib.Path] = ()) -> dict:
    """This process's environment, less what would point a subprocess at another Python or AF3."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "AF3_CPU_PATCH", "AF3_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    env["JAX_PLATFORMS"] = "cpu"
    return env


# The running subprocesses of _run, so an interrupted build stops them (the
# parallel steps run them from worker threads, which KeyboardInterrupt never reaches).
_children: set = set()
_children_lock = threading.Lock()
_stopping = False


def _run(argv: list, name: str, *, env: dict | None = None, cwd: pathlib.Path | None = None) -> str:
    """Run ``argv``, keep its output in ``<cache>/logs/<name>.log``; its stdout, or BuildError with the output's end."""
    log = cache_root() / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in argv]
    with _children_lock:
        if _stopping:
            raise BuildError(f"{name}: the build was interrupted")
        try:
            proc = subprocess.Popen(argv, env=env or _env(), cwd=cwd or cache_root(), text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise BuildError(f"{name}: {exc}") from None
        _children.add(proc)
    try:
        stdout, stderr = proc.communicate()
    finally:
        proc.kill()  # a no-op unless interrupted
        proc.wait()
        with _children_lock:
            _children.discard(proc)
    log.write_text(f"$ {' '.join(argv)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    if proc.returncode != 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise BuildError(f"{name} failed (exit {proc.returncode}; whole output in {log}):\n{tail}")
    return stdout


def _stop_children() -> None:
    global _stopping
    with _children_lock:
        _stopping = True
        for proc in _children:
            proc.kill()


@contextlib.contextmanager
def _exclusive():
    """One build of a cache at a time (a test may start one while the CLI runs)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@functools.lru_cache(maxsize=None)
def _python312() -> pathlib.Path:
    """A Python 3.12 (AF3 v3.0.2 on need it, and the C++ extension is cp312): pyenv's newest, else python3.12 on PATH.

    Each candidate is asked for its real executable: a pyenv shim on PATH may
    point at another version, or at none.
    """
    pyenv = pathlib.Path(os.environ.get("PYENV_ROOT") or pathlib.Path.home() / ".pyenv")
    numbered = lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)]  # noqa: E731
    candidates = sorted(pyenv.glob(f"versions/{PYTHON}.*/bin/python{PYTHON}"), key=numbered, reverse=True)
    candidates += [shutil.which(f"python{PYTHON}"), f"/usr/bin/python{PYTHON}", f"/usr/local/bin/python{PYTHON}"]
    probe = "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])"
    for candidate in filter(None, candidates):
        try:
            proc = subprocess.run([str(candidate), "-c", probe], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = proc.stdout.split()
        if proc.returncode == 0 and lines[-1:] == [PYTHON]:
            return pathlib.Path(lines[0])
    raise BuildError(f"no Python {PYTHON} found (pyenv's versions/{PYTHON}.*, python{PYTHON} on PATH): install one")


def _pip() -> list[str]:
    """pip of this interpreter, else of Python 3.12 (a uv-made venv has none)."""
    import importlib.util

    return [sys.executable if importlib.util.find_spec("pip") else str(_python312()), "-m", "pip"]


def _uv() -> pathlib.Path:
    """uv, pinned, installed once into the cache: venvs in seconds, each package stored once and hard-linked."""
    home = cache_root() / "tools" / UV.replace("==", "-")
    if not (home / "bin" / "uv").is_file():
        with _building(home) as tmp:
            _run([*_pip(), "install", "--quiet", "--disable-pip-version-check", "--target", tmp, UV], "uv")
    return home / "bin" / "uv"


def _uv_run(args: list, name: str) -> str:
    """``uv ARGS`` with its cache in ours (hard links need one file system) and no downloads of Pythons."""
    env = {**_env(), "UV_CACHE_DIR": str(cache_root() / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never"}
    return _run([_uv(), *args, "--no-config", "--quiet"], name, env=env)


def _colabfold_wheel() -> pathlib.Path:
    """PyPI's cp312 wheel of alphafold3-colabfold, downloaded once: it carries AF3's C++ extension."""
    home = cache_root() / "downloads" / COLABFOLD_WHEEL.replace("==", "-")
    wheels = sorted(home.glob("*.whl"))
    if not wheels:
        with _building(home) as tmp:
            _run([*_pip(), "download", "--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
                  "--python-version", PYTHON, "--dest", tmp, COLABFOLD_WHEEL], "colabfold-wheel")
        wheels = sorted(home.glob("*.whl"))
    if not wheels:
        raise BuildError(f"pip download {COLABFOLD_WHEEL} gave no wheel")
    return wheels[0]


# ----------------------------------------------------------------- products


def _build_venv(version: str) -> None:
    """The venv of ``version``'s dependency group, exactly as its lock file says.

    ``--relocatable``: it is made under a temporary name and renamed.  Its
    site-packages gets ``share/libcifpp/components.cif``, where every tag's
    build_data finds the CCD (v3.0.0 - v3.0.1 look nowhere else; later tags
    first try $LIBCIFPP_DATA_DIR).
    """
    venv = _venv_dir(version)
    with _building(venv) as tmp:
        _uv_run(["venv", "--relocatable", "--python", _python312(), tmp], f"venv-{VENV_GROUP[version]}")
        _uv_run(["pip", "sync", "--python", _python_of(tmp), _lock_file(version)], f"sync-{VENV_GROUP[version]}")
        share = next(tmp.glob("lib/python*/site-packages")) / "share" / "libcifpp"
        share.mkdir(parents=True)
        (share / "components.cif").symlink_to(_components_cif())
    _write_stamp(venv, _venv_key(version), python=str(_python312()))


def _build_components_cif(shared: pathlib.Path, python: pathlib.Path) -> None:
    """``components.cif`` from the archive, with AF3's own dependency ``zstandard`` (437 MB, seconds)."""
    home = _components_cif().parent
    with _building(home) as tmp:
        code = "import sys, zstandard; zstandard.ZstdDecompressor().copy_stream(open(sys.argv[1], 'rb'), open(sys.argv[2], 'wb'))"
        _run([python, "-c", code, shared / "components.cif.zst", tmp / "components.cif"], "components-cif")
    _write_stamp(home, _cif_key(shared))


def _unpack(archive: pathlib.Path, dest: pathlib.Path) -> None:
    """Extract a ``git archive`` into ``dest`` without its top directory (``alphafold3-<name>/``)."""
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            _, _, rest = member.name.partition("/")
            if rest:
                members.append(member.replace(name=rest, deep=False))
        tar.extractall(dest, members=members, filter="data")


def _assemble_checkout(archive: pathlib.Path, dest: pathlib.Path) -> None:
    """The checkout plus what ``pip install`` of it puts into ``src/alphafold3`` (the CCD pickles aside)."""
    _unpack(archive, dest)
    package = dest / "src" / "alphafold3"
    with zipfile.ZipFile(_colabfold_wheel()) as wheel, wheel.open(CPP_EXTENSION) as so:
        (package / pathlib.Path(CPP_EXTENSION).name).write_bytes(so.read())
    shutil.copy2(dest / OUTPUT_TERMS, package / OUTPUT_TERMS)


def _build_ccd(shared: pathlib.Path, version: str) -> None:
    """``build_data`` of ``version`` (unmodified, in a scratch checkout), for every tree of its group."""
    home = _ccd_dir(version)
    with _building(home) as tmp:
        checkout = tmp / "checkout"
        _assemble_checkout(_archive(shared, version), checkout)
        code = "from alphafold3.build_data import build_data; build_data()"
        _run([_python_of(_venv_dir(version)), "-c", code], f"build_data-{version}", env=_env([checkout / "src"]), cwd=tmp)
        for name in CCD_PICKLES:
            (checkout / CONVERTERS / name).rename(tmp / name)
        shutil.rmtree(checkout)
    _write_stamp(home, _ccd_key(shared, version), made_by=version)


def _build_tree(shared: pathlib.Path, version: str) -> None:
    root = _tree_dir(version)
    with _building(root) as tmp:
        _assemble_checkout(_archive(shared, version), tmp)
        for name in CCD_PICKLES:
            _link(_ccd_dir(version) / name, tmp / CONVERTERS / name)
    _write_stamp(root, _tree_key(shared, version))


def _link(source: pathlib.Path, dest: pathlib.Path) -> None:
    """A hard link (the pickles are 0.5 GB each), a copy where the file system has none."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


# Run by each tree's interpreter: what every real-AF3 test needs to import.
SMOKE = """
import json, sys
import af3_cpu_patch  # first: v3.0.0/v3.0.1 import jax_triton, which raises on CPU-only jax without its placeholder
import jax
import alphafold3.cpp
from alphafold3.constants import chemical_component_sets, chemical_components
from af3_cpu_patch.af3 import install as af3_install
ccd = chemical_components.Ccd()
try:  # what featurisation asks of every residue; v3.0.0 needs SMILES descriptors, which this CCD lacks
    chemical_components.component_name_to_info(ccd, "ALA")
    component_info = "ok"
except Exception as exc:
    component_info = f"{type(exc).__name__}: {exc}"
sys.path.insert(0, sys.argv[1])
import run_alphafold
print(json.dumps({
    "af3": af3_install.detect().version,
    "jax": jax.__version__,
    "components": len(ccd),
    "ALA": ccd["ALA"]["_chem_comp.name"][0],
    "glycans_linking": len(chemical_component_sets.GLYCAN_LINKING_LIGANDS),
    "component_info": component_info,
}))
"""


def _smoke(shared: pathlib.Path, version: str) -> dict:
    root = _tree_dir(version)
    out = _run([_python_of(_venv_dir(version)), "-c", SMOKE, root], f"smoke-{version}", env=_env([root / "src", ROOT]), cwd=root)
    result = json.loads(out.strip().splitlines()[-1])
    _write_stamp(root, _smoke_key(shared, version), "smoke", result=result)
    return result


# Both weight files from one initialisation (the jit of AF3's init is most of
# the 2-4 minutes each): the CLI's own random_weights.write, with
# init_params memoised, so the files are those ``af3-cpu random-weights [--fill-zero-init]`` writes.
WEIGHTS = """
import pathlib, sys
from af3_cpu_patch import random_weights
root, plain, filled, seed = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
init_params, memo = random_weights.init_params, {}
def init_once(run_alphafold, seed):
    if seed not in memo:
        memo[seed] = init_params(run_alphafold, seed)
    return memo[seed]
random_weights.init_params = init_once
random_weights.write(plain, seed=seed, af3_dir=root)
random_weights.write(filled, seed=seed, af3_dir=root, fill_zero=True)
"""


def _build_weights(shared: pathlib.Path) -> None:
    root = _tree_dir(WEIGHTS_VERSION)
    python = _python_of(_venv_dir(WEIGHTS_VERSION))
    with _building(_weights_dir(False)) as plain, _building(_weights_dir(True)) as filled:
        _run([python, "-c", WEIGHTS, root, plain, filled, WEIGHTS_SEED], "random-weights", env=_env([root / "src", ROOT]))
    for product in (_weights_dir(False), _weights_dir(True)):
        _write_stamp(product, _weights_key(shared))


# -------------------------------------------------------------------- build


@dataclasses.dataclass(frozen=True)
class _Step:
    label: str
    current: typing.Callable[[], bool]
    make: typing.Callable[[], object]  # returns something to log, or None
    fatal: bool = True  # False: the build goes on and fails at its end (a tree that does not work)
    parallel: bool = False  # may run beside the other parallel steps next to it, two at a time


def _steps(shared: pathlib.Path, wanted: list[str], weights: bool) -> list[_Step]:
    """The build in order: venvs, components.cif, CCD pickles, trees, then weights and smoke checks.

    build_data peaks at 11 GB, so it runs alone.  The weights (6.3 GB peak,
    mostly a compilation on one core) and the smoke checks (4 GB, one core)
    run two at a time: at most about 10.5 GB.
    """
    def step(label, product, key, make, *args, stamp="build", **flags):
        return _Step(label, functools.partial(_is_current, product, key, stamp), functools.partial(make, *args), **flags)

    steps = [
        step(f"venv {group}", _venv_dir(version), _venv_key(version), _build_venv, version)
        for group, version in {VENV_GROUP[v]: v for v in wanted}.items()
    ]
    steps.append(step("components.cif", _components_cif().parent, _cif_key(shared),
                      _build_components_cif, shared, _python_of(_venv_dir(wanted[0]))))
    steps += [  # the newest wanted tree of each group runs build_data
        step(f"build_data {group} (in {version})", _ccd_dir(version), _ccd_key(shared, version), _build_ccd, shared, version)
        for group, version in {CCD_GROUP[v]: v for v in wanted}.items()
    ]
    steps += [step(f"tree {v}", _tree_dir(v), _tree_key(shared, v), _build_tree, shared, v) for v in wanted]
    if weights:
        key = _weights_key(shared)
        steps.append(_Step("random weights (plain, filled)",
                           lambda: _is_current(_weights_dir(False), key) and _is_current(_weights_dir(True), key),
                           functools.partial(_build_weights, shared), parallel=True))
    steps += [
        step(f"smoke {v}", _tree_dir(v), _smoke_key(shared, v), _smoke, shared, v, stamp="smoke", fatal=False, parallel=True)
        for v in wanted
    ]
    return steps


def _wanted(shared: pathlib.Path, versions, weights: bool) -> list[str]:
    versions = {versions} if isinstance(versions, str) else set(versions)
    unknown = versions - set(VERSIONS)
    if unknown:
        raise BuildError(f"unknown AF3 version(s) {', '.join(sorted(unknown))}: known are {', '.join(VERSIONS)}")
    wanted = [v for v in VERSIONS if v in versions or (weights and v == WEIGHTS_VERSION)]
    missing = [v for v in wanted if _archive(shared, v) is None]
    if missing:
        raise BuildError(f"no archive of AF3 {', '.join(missing)} in {shared}")
    if not wanted:
        raise BuildError("nothing to build: give at least one version")
    return wanted


def _do(step: _Step, log) -> str | None:
    """Make ``step`` unless current; its failure message if it failed without being fatal."""
    begun = time.monotonic()
    if step.current():
        log(f"{time.monotonic() - begun:7.1f} s  {step.label}: up to date")
        return None
    try:
        result = step.make()
    except BuildError as exc:
        if step.fatal:
            raise
        log(f"{time.monotonic() - begun:7.1f} s  {step.label}: FAILED")
        return f"{step.label}: {exc}"
    log(f"{time.monotonic() - begun:7.1f} s  {step.label}" + (f": {json.dumps(result)}" if result else ""))
    return None


def build(versions=VERSIONS, *, weights=True, log=print) -> None:
    """Make whatever is missing or stale: ``versions``' trees with their venvs and CCD pickles, each
    smoke-checked, and with ``weights`` the random weights (made by the 3.0.4 tree, so it is built too).

    Idempotent; one line per step through ``log``.  Raises BuildError when
    something cannot be built; a tree that fails its smoke check does not
    stop the others, and the error names it at the end.
    """
    global _stopping
    shared = shared_dir()
    if shared is None:
        raise BuildError(skip_reason())
    wanted = _wanted(shared, versions, weights)
    started = time.monotonic()
    failed = []
    with _exclusive():
        _stopping = False
        for parallel, group in itertools.groupby(_steps(shared, wanted, weights), key=lambda step: step.parallel):
            if not parallel:
                failed += [_do(step, log) for step in group]
                continue
            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
                futures = [pool.submit(_do, step, log) for step in group]
                try:
                    failed += [future.result() for future in futures]
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    _stop_children()
                    raise
    log(f"{time.monotonic() - started:7.1f} s  total")
    if any(failed):
        raise BuildError("\n".join(filter(None, failed)))


# --------------------------------------------------------------- status, lock


def _disk_usage(path: pathlib.Path) -> int:
    """Bytes on disk under ``path``, each hard-linked file once (the venvs share uv's cache)."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            stat = os.lstat(os.path.join(dirpath, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def status(log=print) -> None:
    """Where the archives and the cache are, and what is built."""
    shared = shared_dir()
    log(f"archives: {shared or 'none (' + str(skip_reason()) + ')'}")
    log(f"cache:    {cache_root()} ({_disk_usage(cache_root()) / 1e9:.1f} GB)")
    for version in VERSIONS:
        built = tree(version)
        if built is None:
            log(f"  {version:6} not built (or stale)")
            continue
        result = _read_stamp(built.root, "smoke")["result"]
        caveat = "" if result["component_info"] == "ok" else f" (component_name_to_info: {result['component_info']})"
        log(f"  {version:6} AF3 {result['af3']}, jax {result['jax']}, {result['components']} CCD components{caveat}; "
            f"{built.python}")
    for filled in (False, True):
        log(f"  weights {'filled' if filled else 'plain '}: {model_dir(filled) or 'not built (or stale)'}")


def _upstream_lock(archive: pathlib.Path) -> tuple[dict, str]:
    """The versions in the archive's ``uv.lock`` (none before v3.0.2), and its commit time (ISO 8601)."""
    with tarfile.open(archive) as tar:
        top = tar.next()
        lock = next((m for m in tar.getmembers() if m.name == f"{top.name}/uv.lock"), None)
        text = tar.extractfile(lock).read().decode() if lock else ""
    committed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(top.mtime))
    if not text:
        return {}, committed
    import tomllib

    versions = {}
    for package in tomllib.loads(text)["package"]:
        if "version" in package and package["name"] != "alphafold3":
            versions.setdefault(package["name"], set()).add(package["version"])
    return {name: found.pop() for name, found in versions.items() if len(found) == 1}, committed


def lock(log=print) -> None:
    """Re-resolve ``tests/testbed_requirements/<group>.txt`` from ``<group>.in``, for Linux x86-64.

    A group gets the versions of its newest tag's upstream ``uv.lock`` (CPU
    packages only), or, for tags without one (v3.0.0, v3.0.1), what PyPI had
    when that tag was committed.
    """
    shared = shared_dir()
    if shared is None:
        raise BuildError(skip_reason())
    for group in dict.fromkeys(VENV_GROUP.values()):
        newest = [v for v in VERSIONS if VENV_GROUP[v] == group][-1]
        pins, committed = _upstream_lock(_archive(shared, newest))
        args = ["pip", "compile", "--python-version", PYTHON, "--python-platform", "x86_64-manylinux_2_28",
                "--custom-compile-command", "python -m tests.testbed lock", "--no-annotate",
                "--output-file", REQUIREMENTS / f"{group}.txt", REQUIREMENTS / f"{group}.in"]
        with tempfile.TemporaryDirectory() as tmp:
            if pins:
                constraints = pathlib.Path(tmp) / "uv-lock-constraints.txt"
                constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
                args += ["--constraint", constraints]
            else:
                args += ["--exclude-newer", committed]
            _uv_run(args, f"lock-{group}")
        log(f"{group}.txt: " + (f"as upstream's uv.lock of {newest}" if pins else f"PyPI as of {committed} ({newest})"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="make what is missing or stale")
    build_parser.add_argument("--versions", default=",".join(VERSIONS), help="comma-separated (default: all)")
    build_parser.add_argument("--no-weights", action="store_true", help="no random weights")
    commands.add_parser("status", help="what is built")
    commands.add_parser("lock", help="re-resolve tests/testbed_requirements/*.txt")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed build stops its subprocesses too
    if args.command == "build" and shared_dir() is None:  # a clone without ../shared: nothing to build, tests skip
        print(f"testbed: nothing built: {skip_reason()}; the real-AF3 tests will skip")
        return 0
    try:
        if args.command == "build":
            build(tuple(v.strip() for v in args.versions.split(",") if v.strip()), weights=not args.no_weights)
        elif args.command == "status":
            status()
        else:
            lock()
    except BuildError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
