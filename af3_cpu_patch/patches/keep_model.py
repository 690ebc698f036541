"""Keep one AF3 ``ModelRunner`` per process across ``run_alphafold.main()`` calls.

Why: a batch worker calls AF3's own ``main()`` once per task, and ``main()``
builds a new ``ModelRunner`` each time.  A runner holds the loaded weights
(``model_params``) and the jitted model (``_model``, whose compiled
executables are cached per bucket), so a new one reloads ~1 GB of weights and
recompiles.  Returning the runner built with the same arguments keeps both;
AF3's chemical components dictionary is already cached per process by AF3.
"""

from __future__ import annotations

from af3_cpu_patch import settings
from af3_cpu_patch.engine.patch import Numerics, WrapperPatch
from af3_cpu_patch.patches.targets import (
    RUN_ALPHAFOLD,
)

_kept: dict[str, object] = {}
built = 0  # runners actually built in this process (for reports and tests)


def _key(args: tuple, kwargs: dict) -> str:
    """The runner's arguments and the run's settings, which the runner's jitted model was traced with."""
    return repr((args, sorted(kwargs.items()), settings.current().key()))


def keep_model_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for ``run_alphafold.ModelRunner``: the same arguments give the same runner."""
    global built
    key = _key(args, kwargs)
    runner = _kept.get(key)
    if runner is None:
        _kept.clear()  # one model per process: drop a runner built with other settings
        runner = _kept[key] = wrapped(*args, **kwargs)
        built += 1
    return runner


def forget() -> None:
    _kept.clear()


KEEP_MODEL = WrapperPatch(
    name="keep-model",
    why=(
        "run_alphafold.main() builds a new ModelRunner per call; a batch worker calls it per task "
        "and keeps one runner, so weights load and the model compiles once per process."
    ),
    modules=RUN_ALPHAFOLD,
    function="ModelRunner",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    wrapper=keep_model_wrapper,
)


PATCHES = (KEEP_MODEL,)
