"""Where af3-cpu keeps what it caches: ``$XDG_CACHE_HOME/af3-cpu``, else ``~/.cache/af3-cpu``.

The JAX compilation cache (``jax``) and the CCD index (``ccd``) live under it.
Read at call time, so a changed ``XDG_CACHE_HOME`` is followed.
"""

from __future__ import annotations

import os
import pathlib


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "af3-cpu"
