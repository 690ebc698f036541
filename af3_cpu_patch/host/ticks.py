"""Host ticks from inside jitted code that JAX's compilation cache can keep.

Live progress needs the host to hear from the running XLA program once per
trunk recycle and diffusion step.  ``jax.debug.callback`` does that, but JAX
never writes a persistent compilation-cache entry for a program with host
callbacks (the Python objects are baked into the executable), so with progress
on every run compiled AF3's model again (20-30 s).

A tick here is an XLA FFI custom call with no operands and no results to a
named target.  The compiled program names only the target, so it is cached like
any other; each process registers the target again, by the same name, before
the program runs.  The target's handler is a ``ctypes`` function (no compiler
needed) that answers XLA's metadata query with XLA's own FFI version and
otherwise calls the Python function registered for that name.

``prepare()`` registers a test target and runs a tiny jitted program through it
once.  Where that fails (a jaxlib whose FFI this does not fit), ticks fall back
to ``jax.debug.callback`` and ``cacheable()`` says False.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Callable

PREFIX = "af3_cpu_patch_tick_"
_METADATA_EXTENSION = 1  # XLA_FFI_Extension_Metadata in xla/ffi/api/c_api.h


# Leading fields of XLA's FFI C structs (xla/ffi/api/c_api.h), stable since
# jaxlib 0.4.34: each struct starts with its size and an extension pointer.
class _ExtensionBase(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int), ("next", ctypes.c_void_p)]


class _ApiVersion(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("major", ctypes.c_int), ("minor", ctypes.c_int)]  # fmt: skip


class _Metadata(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("api_version", _ApiVersion), ("traits", ctypes.c_uint32)]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("base", _ExtensionBase), ("metadata", ctypes.POINTER(_Metadata))]


class _Api(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p), ("api_version", _ApiVersion)]


class _CallFrame(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.POINTER(_ExtensionBase)),
                ("api", ctypes.POINTER(_Api))]  # fmt: skip


_HANDLER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_CallFrame))
_new_capsule = ctypes.pythonapi.PyCapsule_New  # what register_ffi_target takes: a capsule of the C pointer
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
_lock = threading.Lock()
_handlers: dict[str, object] = {}  # target name -> ctypes handler, kept alive for XLA
_state = {"cacheable": None}  # None: not prepared; then True (FFI ticks) or False (debug callbacks)


def _answer_metadata(frame: _CallFrame) -> None:
    """Fill XLA's metadata query: the framework's own FFI version (jaxlib 0.4.34 passes no api: 0.1)."""
    extension = ctypes.cast(frame.extension_start, ctypes.POINTER(_MetadataExtension)).contents
    metadata = extension.metadata.contents
    major, minor = (frame.api.contents.api_version.major, frame.api.contents.api_version.minor) if frame.api else (0, 1)
    metadata.api_version.struct_size = ctypes.sizeof(_ApiVersion)
    metadata.api_version.extension_start = None
    metadata.api_version.major = major
    metadata.api_version.minor = minor
    metadata.traits = 0


def _make_handler(on_tick: Callable[[], None]):
    def handler(frame_pointer):
        try:
            frame = frame_pointer.contents
            if frame.extension_start and frame.extension_start.contents.type == _METADATA_EXTENSION:
                _answer_metadata(frame)
            else:
                on_tick()
        except Exception:  # noqa: BLE001 - never raise into XLA; a lost tick only costs a bar update
            pass
        return None  # NULL: success

    return _HANDLER(handler)


def _ffi():
    import jax

    return getattr(jax, "ffi", None) or __import__("jax.extend.ffi").extend.ffi  # jax < 0.4.38: jax.extend.ffi


def _register(name: str, on_tick: Callable[[], None]) -> None:
    with _lock:
        if name in _handlers:
            return
        handler = _make_handler(on_tick)
        capsule = _new_capsule(ctypes.cast(handler, ctypes.c_void_p), None, None)
        _ffi().register_ffi_target(name, capsule, platform="cpu")
        _handlers[name] = handler


def _ffi_tick(name: str) -> None:
    out = _ffi().ffi_call(name, (), has_side_effect=True)
    if callable(out):  # jax >= 0.4.36 returns the call; older versions call at once
        out()


def prepare() -> bool:
    """Check once, on the CPU, that FFI ticks reach the host; returns ``cacheable()``.

    Call before AF3 is traced: the check runs a jitted program of its own.
    """
    if _state["cacheable"] is not None:
        return _state["cacheable"]
    import jax

    heard = []
    try:
        _register(PREFIX + "self_test", lambda: heard.append(1))
        jax.block_until_ready(jax.jit(lambda: _ffi_tick(PREFIX + "self_test"))())
        _state["cacheable"] = heard == [1]
    except Exception:  # noqa: BLE001 - any failure means: use jax.debug.callback
        _state["cacheable"] = False
    return _state["cacheable"]


def cacheable() -> bool:
    """Whether ticks leave programs cacheable (False until ``prepare()`` succeeded)."""
    return bool(_state["cacheable"])


def tick(name: str, on_tick: Callable[[], None]) -> None:
    """Inside traced code: have the host call ``on_tick()`` each time this point runs.

    One name, one host function: the first ``on_tick`` given for a name is the
    one called.  The tick carries no data into or out of the computation.
    """
    if cacheable():
        _register(PREFIX + name, on_tick)
        _ffi_tick(PREFIX + name)
    else:
        import jax

        jax.debug.callback(on_tick)
