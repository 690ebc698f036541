"""AF3's weight loader with ``params-device-put`` and ``params-read-in-place`` (skipped without a real AF3).

A weights file written by AF3's own ``encode_record`` (float32, bfloat16 and
uint8 arrays, as in the real weights) loads to the same arrays -- names,
dtypes, shapes and bits -- with the two rewrites as without them, and
loading compiles no XLA program with them.
"""

from __future__ import annotations

from tests.helpers import run_python

COMPARE = """
import json, logging, pathlib, sys, tempfile
import ml_dtypes, numpy as np
import jax
import af3_cpu_patch
from af3_cpu_patch.patches import CLI_PATCHES
from alphafold3.model import params

rng = np.random.default_rng(7)
arrays = {
    ("diffuser/~/linear", "weights"): rng.standard_normal((33, 17)).astype(np.float32),
    ("diffuser/~/linear", "bias"): rng.standard_normal(17).astype(np.float32),
    ("evoformer/pair", "weights"): rng.standard_normal((4, 5, 6)).astype(ml_dtypes.bfloat16),
    ("__meta__", "__identifier__"): np.frombuffer(b"af3-cpu-test-weights", np.uint8),
}
folder = pathlib.Path(tempfile.mkdtemp())
with open(folder / "af3.bin", "wb") as f:
    for (scope, name), arr in arrays.items():
        f.write(params.encode_record(scope, name, arr))

compiles = []
class Count(logging.Handler):
    def emit(self, record):
        if "Compiling" in record.getMessage():
            compiles.append(record.getMessage()[:80])

def load():
    compiles.clear()
    loaded = params.get_model_haiku_params(model_dir=folder)
    return {(s, n): np.asarray(a) for s, names in loaded.items() for n, a in names.items()}, len(compiles), type(next(iter(loaded["__meta__"].values())))

jax.config.update("jax_log_compiles", True)
logging.getLogger("jax").addHandler(Count())
stock, stock_compiles, stock_type = load()
af3_cpu_patch.install(CLI_PATCHES)
report = {r.patch: str(r.status) for r in af3_cpu_patch.report() if r.patch.startswith("params-")}
patched, patched_compiles, patched_type = load()
af3_cpu_patch.uninstall()

def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()

print(json.dumps({
    "report": report,
    "keys": [sorted(map(list, stock)), sorted(map(list, patched))],
    "written": all(same(stock[k], v) for k, v in arrays.items()),
    "equal": sorted(stock) == sorted(patched) and all(same(stock[k], patched[k]) for k in stock),
    "types": [stock_type.__name__, patched_type.__name__],
    "compiles": [stock_compiles, patched_compiles],
}))
"""


def test_weights_load_to_the_same_arrays_without_compiling(af3):
    result = run_python(COMPARE, pythonpath=af3.path, python=af3.python, timeout=600)
    assert result["report"] == {"params-device-put": "applied", "params-read-in-place": "applied"}, result["report"]
    assert result["keys"][0] == result["keys"][1] and len(result["keys"][0]) == 4
    assert result["written"], "stock AF3 did not read back what was written: the test file is wrong"
    assert result["equal"]
    assert result["types"][0] == result["types"][1]  # jax Arrays either way
    assert result["compiles"][0] > 0, "stock compiled nothing: the count does not see jnp.array's programs"
    assert result["compiles"][1] == 0
