"""AF3 v3.0.0/1 import jax_triton at module level; on CPU-only JAX it raises.

With the plugin the import gives a placeholder that explains itself when used.
"""

from __future__ import annotations

import pathlib

from tests.helpers import run_python

STANDIN_JT = pathlib.Path(__file__).parent / "standin_jax_triton"

SNIPPET = """
import json, os, sys
if os.environ.get("WITH_PLUGIN") == "1":
    import af3_cpu_patch
result = {}
try:
    import jax_triton
    result["imported"] = True
    try:
        result["call"] = jax_triton.triton_call()
    except RuntimeError as exc:
        result["call_error"] = str(exc)
except ImportError as exc:
    result["imported"] = False
    result["import_error"] = str(exc)
if "af3_cpu_patch" in sys.modules:
    result["status"] = {r.patch: str(r.status) for r in af3_cpu_patch.report()}["jax-triton-placeholder"]
    af3_cpu_patch.uninstall()
    sys.modules.pop("jax_triton", None)
    try:
        import jax_triton
        result["after_uninstall"] = "imported"
    except ImportError:
        result["after_uninstall"] = "ImportError"
print(json.dumps(result))
"""


def test_without_plugin_jax_triton_breaks_the_import():
    result = run_python(SNIPPET, pythonpath=[STANDIN_JT], env={"WITH_PLUGIN": "0"})
    assert result["imported"] is False
    assert "GPU support" in result["import_error"]


def test_with_plugin_import_gives_a_self_explaining_placeholder():
    result = run_python(SNIPPET, pythonpath=[STANDIN_JT], env={"WITH_PLUGIN": "1"})
    assert result["imported"] is True
    assert "--flash_attention_implementation=xla" in result["call_error"]
    assert "GPU support" in result["call_error"]
    assert result["status"] == "applied"
    assert result["after_uninstall"] == "ImportError"


def test_working_jax_triton_is_left_alone():
    result = run_python(SNIPPET, pythonpath=[STANDIN_JT], env={"WITH_PLUGIN": "1", "STANDIN_JAX_TRITON_OK": "1"})
    assert result["call"] == "called"
    assert result["status"] == "not needed"
