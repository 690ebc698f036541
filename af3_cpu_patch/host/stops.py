"""Stops by SIGTERM, SIGINT and SIGHUP that clean up, and a final rename no signal can split.

Why: SLURM's walltime, preemption and ``scancel`` send SIGTERM (then SIGKILL
after ``KillWait``, 30 s by default), a closed terminal sends SIGHUP, Ctrl-C
SIGINT.  Python's default SIGTERM and SIGHUP end the process without running
a single ``finally``, so a stopped run left its staging folder for good; a
Ctrl-C during the final moves could leave half a result in place.

For the duration of a run (:func:`guard`, main thread only), the three
signals raise :class:`Stopped` in the main thread, so ``finally`` and
``except BaseException`` cleanup runs; afterwards the previous handlers come
back (in-process callers, such as tests, keep theirs).  A signal the process
ignored when the run began stays ignored (``nohup``, or ``&`` in a script).

* Once a stop has been raised, further signals do not raise again: the
  cleanup they would interrupt is what makes the stop clean.
* Inside :func:`critical` (the publishing rename) signals are held until the
  block ends, then the stop is raised; a critical block refuses to start once
  a stop was asked for, so a stop that some code swallowed cannot publish.
* Python runs signal handlers only between bytecodes of the main thread.
  While that thread waits in native code -- an XLA computation whose result
  is being converted to numpy, a compilation -- the handler waits too, for
  minutes on a big input, past SLURM's ``KillWait``.  A watcher thread wakes
  on the signal itself (``signal.set_wakeup_fd``); if the main thread has not
  taken the stop within :data:`GRACE` seconds, the watcher runs the actions
  registered with :func:`on_stop` (remove staging folders: the main thread is
  computing, not writing), prints the one-line message and ends the process
  with ``128 + signal``.  It does the same when the signal is repeated after
  :data:`GRACE` seconds while the main thread is still unwinding.  It never
  does so while a critical block runs: it waits for the block to end.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE = 3.0  # seconds the main thread has to take a stop before the watcher ends the process
PREFIX = "af3-cpu: "


class Stopped(BaseException):
    """A run stopped by a signal.  A BaseException, so ``except Exception`` (retries, error reports) lets it pass."""

    def __init__(self, signum: int, note: str | None = None):
        super().__init__(signum)
        self.signum = signum
        self.note = note  # what was kept or removed, set by the code that cleaned up

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum

    def message(self) -> str:
        return f"interrupted by {self.name}" + (f"; {self.note}" if self.note else "")

    def __str__(self) -> str:
        return self.message()


class _State:
    def __init__(self):
        self.active = False
        self.handled = threading.Event()  # the main thread's handler ran
        self.actions: list[Callable[[Stopped], str | None]] = []
        self.lock = threading.RLock()  # held by critical blocks, and by the watcher's exit for good
        self.reset()

    def reset(self) -> None:
        self.signum: int | None = None  # the first signal of this run
        self.raised = False  # a Stopped for it was raised in the main thread
        self.depth = 0  # critical/held blocks the main thread is in
        self.handled.clear()


_state = _State()
_main = threading.main_thread()


def _handler(signum, frame):
    _state.handled.set()
    if _state.signum is None:
        _state.signum = signum
    if _state.raised or _state.depth:
        return  # already stopping, or held until the critical block ends
    _state.raised = True
    raise Stopped(_state.signum)


def requested() -> int | None:
    """The signal that asked this run to stop, if one did."""
    return _state.signum if _state.active else None


def as_stop(exc: BaseException) -> Stopped | None:
    """``exc`` as a stop: itself if it is one; a new one if a signal asked for a stop while it was raised.

    Why the second case: code between the handler and us may wrap the stop
    (JAX turns an exception inside a host callback into ``JaxRuntimeError``).
    """
    if isinstance(exc, Stopped):
        return exc
    if requested() is not None:
        _state.raised = True
        return Stopped(_state.signum)
    return None


class _Hold:
    """Signals arriving inside are held until the block ends; a critical block also keeps the watcher out."""

    def __init__(self, critical: bool):
        self.critical = critical

    def __enter__(self):
        main = threading.current_thread() is _main
        if main:
            _state.depth += 1  # first: from here on a signal is held, so none can come between the lock and the block
        if self.critical:
            _state.lock.acquire()
            if main and requested() is not None:  # a stop came before the block: it must not start
                _state.lock.release()
                _state.depth -= 1
                _state.raised = True
                raise Stopped(_state.signum)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.critical:
            _state.lock.release()
        if threading.current_thread() is not _main:
            return False
        _state.depth -= 1
        # Raise the held stop now, unless the block failed or an exception is being handled: those go on, and
        # whoever handles them asks as_stop().
        if (not _state.depth and exc_type is None and sys.exc_info()[0] is None
                and requested() is not None and not _state.raised):
            _state.raised = True
            raise Stopped(_state.signum)
        return False


def critical() -> _Hold:
    """The block that makes a result visible: no signal splits it, none starts it after a stop was asked for."""
    return _Hold(critical=True)


def held() -> _Hold:
    """A cleanup no signal should cut short (removing a staging folder after an error).

    Unlike a critical block it does not keep the watcher out: a cleanup stuck
    past the grace may be finished by the watcher's own actions.
    """
    return _Hold(critical=False)


@contextlib.contextmanager
def on_stop(action: Callable[[Stopped], str | None]):
    """While inside: if the watcher has to end the process, it first runs ``action(stop)``.

    The action runs in the watcher thread while the main thread is stuck in
    native code; it should only remove what the stop leaves unfinished.  The
    innermost action's returned note (what was kept) goes in the message.
    """
    _state.actions.append(action)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _state.actions.remove(action)


def _end_process(signum: int) -> None:
    """The watcher's stop: actions, one line, exit.  Waits for a critical block; never returns."""
    _state.lock.acquire()  # never released: a critical block in the main thread cannot start any more
    stop = Stopped(signum)
    for action in reversed(list(_state.actions)):
        try:
            note = action(stop)
        except Exception:  # noqa: BLE001 - the exit must happen; the batch's sweep removes what is left
            note = None
        stop.note = stop.note or note
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{PREFIX}{stop.message()}\n")
        sys.stderr.flush()
    os._exit(stop.exit_code)


def _watch(read_fd: int, done: threading.Event) -> None:
    first = last = signum = None
    while not done.is_set():
        ready, _, _ = select.select([read_fd], [], [], 0.2)
        now = time.monotonic()
        if ready:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            ours = [s for s in data if s in SIGNALS]
            if ours:
                if first is None:
                    first, signum = now, ours[0]
                last = now
        if first is None or done.is_set():
            continue
        stuck = not _state.handled.is_set() and now - first >= GRACE
        insisted = last is not None and last - first >= GRACE
        if stuck or insisted:
            _end_process(_state.signum or signum)


@contextlib.contextmanager
def guard():
    """For the duration of a run: the three signals raise :class:`Stopped`; a watcher covers native code.

    A no-op outside the main thread (Python delivers signals to the main
    thread only; a Dask worker thread's process handles its own) and inside
    another guard.
    """
    if threading.current_thread() is not _main or _state.active:
        yield
        return
    previous = {}
    for signum in SIGNALS:
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN or handler is None:  # ignored on purpose, or a handler not set from Python
            continue
        previous[signum] = handler
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    done = threading.Event()
    _state.reset()
    _state.active = True
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(read_fd, done), name="af3-cpu-stops", daemon=True)
    try:
        for signum in previous:
            signal.signal(signum, _handler)
        watcher.start()
        try:
            yield
        except BaseException as exc:
            stop = as_stop(exc)
            if stop is None or stop is exc:
                raise
            raise stop from exc
        if requested() is not None and not _state.raised:  # taken by nothing on the way: still a stop
            _state.raised = True
            raise Stopped(_state.signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(old_fd)
        done.set()
        if watcher.is_alive():
            watcher.join(timeout=2)
        _state.active = False
        os.close(write_fd)
        if not watcher.is_alive():
            os.close(read_fd)
