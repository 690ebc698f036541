"""Live progress inside AF3's single jitted forward pass.

A CPU seed spends minutes to hours inside one jitted call where stock AF3
prints nothing.  Ticks to the host (``ticks``: calls with no operands
that carry no data into or out of the computation, and leave the program
cacheable) come once per trunk recycle and once per diffusion step; the host
turns them into a bar on a terminal or into plain lines at most every
``PLAIN_INTERVAL`` seconds otherwise.  Outputs are bit-identical with and
without.
"""

from __future__ import annotations

import datetime
import functools
import sys
import threading
import time

import numpy as np

from af3_cpu_patch.engine.patch import Numerics, WrapperPatch
from af3_cpu_patch.host import ticks
from af3_cpu_patch.patches.targets import (
    DIFFUSION_HEAD,
    EVOFORMER,
    RUN_ALPHAFOLD,
)

PLAIN_INTERVAL = 30.0
_lock = threading.Lock()
_state: _SeedProgress | None = None


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class _SeedProgress:
    def __init__(self, label: str, recycles_total: int | None, stream=None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.recycles_total = recycles_total
        self.recycles = 0
        self.steps = 0
        self.steps_total: int | None = None
        self.start = time.monotonic()
        self.first_tick: float | None = None  # the compiled program started running
        self.diffusion_start: float | None = None
        self.last_plain = 0.0
        self.printed: tuple[int, int] | None = None

    def text(self) -> str:
        now = time.monotonic()
        recycle = f"recycle {self.recycles}/{self.recycles_total}" if self.recycles_total else f"recycle {self.recycles}"
        parts = [self.label, recycle]
        left = ""
        if self.steps_total:
            parts.append(f"diffusion {self.steps}/{self.steps_total}")
            if self.steps and self.diffusion_start is not None:
                rate = (now - self.diffusion_start) / self.steps
                left = f", ~{_clock(rate * (self.steps_total - self.steps))} left"
        if self.first_tick is not None:
            parts.append(f"compile+load {_clock(self.first_tick - self.start)}")
        return f"{' | '.join(parts)} | {_clock(now - self.start)} elapsed{left}"

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + self.text())
            self.stream.flush()
        elif force or now - self.last_plain >= PLAIN_INTERVAL:
            self.last_plain = now
            self.printed = (self.recycles, self.steps)
            print(self.text(), file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.text() + "\n")
            self.stream.flush()
        elif self.printed != (self.recycles, self.steps):
            print(self.text(), file=self.stream, flush=True)


def begin_seed(label: str, recycles_total: int | None) -> None:
    global _state
    with _lock:
        _state = _SeedProgress(label, recycles_total)


def end_seed() -> None:
    global _state
    with _lock:
        if _state is not None:
            _state.finish()
        _state = None


def _recycle_tick() -> None:
    with _lock:
        if _state is not None:
            _state.first_tick = _state.first_tick or time.monotonic()
            _state.recycles += 1
            _state.show(force=_state.recycles == _state.recycles_total)


def _diffusion_tick(*, total: int) -> None:
    with _lock:
        if _state is None:
            return
        if _state.diffusion_start is None:
            _state.diffusion_start = time.monotonic()
            _state.first_tick = _state.first_tick or _state.diffusion_start
        _state.steps_total = total
        _state.steps += 1
        _state.show(force=_state.steps == total)


# --- wrapt wrappers, installed by the CLI's progress patches -------------------------------


def sample_wrapper(wrapped, instance, args, kwargs):
    """Around ``diffusion_head.sample``: tick once per denoising step."""
    args = list(args)
    if "denoising_step" in kwargs:
        denoising_step = kwargs["denoising_step"]
    else:
        denoising_step = args[0]
    config = kwargs["config"] if "config" in kwargs else args[3]
    total = int(config.steps)
    tick = functools.partial(_diffusion_tick, total=total)

    def ticking_step(positions_noisy, noise_level):
        # No operands: a callback that reads t_hat changes XLA's fusion of the
        # step (and so its FMA contraction and output bits); one with no data
        # dependency does not, and is not batched by vmap, so it runs once a step.
        ticks.tick(f"diffusion_{total}", tick)
        return denoising_step(positions_noisy, noise_level)

    if "denoising_step" in kwargs:
        kwargs["denoising_step"] = ticking_step
    else:
        args[0] = ticking_step
    return wrapped(*args, **kwargs)


def trunk_wrapper(wrapped, instance, args, kwargs):
    """Around ``Evoformer.__call__``, the body of AF3's recycling loop: tick once per recycle."""
    ticks.tick("recycle", _recycle_tick)
    return wrapped(*args, **kwargs)


def seed_wrapper(wrapped, instance, args, kwargs):
    """Around ``ModelRunner.run_inference``: one progress line or bar per seed.

    Also the last point before AF3's model is traced: ``ticks`` checks its
    FFI ticks here (once), so the ticks traced inside use them.
    """
    ticks.prepare()
    config = getattr(instance, "_model_config", None)
    recycles = getattr(config, "num_recycles", None)
    key = kwargs.get("rng_key", args[1] if len(args) > 1 else None)
    label = "inference"
    try:  # jax.random.PRNGKey(seed) holds the seed in its last word
        label = f"seed {int(np.asarray(key).reshape(-1)[-1])}"
    except Exception:  # noqa: BLE001 - the label is cosmetic
        pass
    begin_seed(label, None if recycles is None else recycles + 1)
    try:
        return wrapped(*args, **kwargs)
    finally:
        end_seed()


PROGRESS_SEED = WrapperPatch(
    name="progress-seed",
    why="A CPU seed runs minutes to hours inside one jitted call: one progress bar per seed.",
    modules=RUN_ALPHAFOLD,
    function="ModelRunner.run_inference",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    parameters=("featurised_example", "rng_key"),
    wrapper=seed_wrapper,
)


PROGRESS_TRUNK = WrapperPatch(
    name="progress-recycles",
    why="Tick once per trunk recycle (the Evoformer is the recycling loop's body).",
    modules=EVOFORMER,
    function="Evoformer.__call__",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    wrapper=trunk_wrapper,
)


PROGRESS_DIFFUSION = WrapperPatch(
    name="progress-diffusion",
    why="Tick once per diffusion step, from the denoising step that sample() receives.",
    modules=DIFFUSION_HEAD,
    function="sample",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    parameters=("denoising_step", "batch", "key", "config"),
    wrapper=sample_wrapper,
)


PATCHES = (PROGRESS_SEED, PROGRESS_TRUNK, PROGRESS_DIFFUSION)
