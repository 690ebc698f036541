"""Stand-in for the run_alphafold.py at the root of DeepMind's checkout.

Written for af3-cpu-patch's CLI tests; not AlphaFold 3 code.  It keeps what
the CLI relies on: absl flags with AF3's names, a ``main(argv)`` that asks JAX
for GPU devices and defaults to Triton attention (so it cannot run on a CPU
unpatched), a ``ModelRunner`` whose ``run_inference`` returns
``diffusion_samples.atom_positions`` from the stand-in sampler under jit, and
``extract_inference_results`` feeding the writer.  Set
``STANDIN_DENOISER=nan`` to make the denoiser produce NaN.

For the batch tests it also mimics what a batch relies on: a data pipeline
that fills MSAs of chains without them (``--run_data_pipeline``, logged to
``STANDIN_DATA_LOG``) and writes ``<name>_data.json``; ``--run_inference``;
a ranking CSV and the top sample at the job's top level; a model whose
construction is slow (``STANDIN_LOAD_SECONDS``) and logged per process
(``STANDIN_LOAD_LOG``); a slow prediction (``STANDIN_PREDICT_SECONDS``); a
prediction that needs more memory than its SLURM job has
(``STANDIN_NEEDS_SLURM_MEM_MB``: below it the process SIGKILLs itself, as
the out-of-memory killer would); and inputs named ``fail*`` are rejected
with a ValueError by the input loader (``folding_input``), where AF3 rejects
bad input.

For the stop tests: ``STANDIN_PREDICT_NATIVE=1`` spends the slow prediction
in native code that does not return to Python (as an XLA computation whose
result is being read), so Python signal handlers wait for it; and
``STANDIN_INFERENCE_ERROR=<file>`` makes inference raise a ValueError once:
on the try that finds no ``<file>`` (it creates it).
"""

import dataclasses
import json
import os
import pathlib
import signal
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from alphafold3.common import folding_input
from alphafold3.model.network import diffusion_head, modules  # noqa: F401 - AF3 imports it too

_JSON_PATH = flags.DEFINE_string("json_path", None, "Input JSON file.")
_INPUT_DIR = flags.DEFINE_string("input_dir", None, "Directory of input JSON files.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output directory.")
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Weights directory.")
_RUN_DATA_PIPELINE = flags.DEFINE_bool("run_data_pipeline", True, "Run the data pipeline.")
_RUN_INFERENCE = flags.DEFINE_bool("run_inference", True, "Run inference.")
DB_DIR = flags.DEFINE_multi_string("db_dir", ["/nonexistent"], "Database directories.")
_GPU_DEVICE = flags.DEFINE_integer("gpu_device", 0, "Device index.")
_FLASH_ATTENTION_IMPLEMENTATION = flags.DEFINE_enum(
    "flash_attention_implementation", "triton", ["triton", "cudnn", "xla"], "Attention implementation."
)
_NUM_RECYCLES = flags.DEFINE_integer("num_recycles", 10, "Recycles.")
_NUM_DIFFUSION_SAMPLES = flags.DEFINE_integer("num_diffusion_samples", 5, "Samples per seed.")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", None, "Seeds per input.")
_BUCKETS = flags.DEFINE_list("buckets", ["256"], "Token buckets.")
_JAX_COMPILATION_CACHE_DIR = flags.DEFINE_string("jax_compilation_cache_dir", None, "Compilation cache.")
_SAVE_EMBEDDINGS = flags.DEFINE_bool("save_embeddings", False, "Write single and pair embeddings per seed.")


@dataclasses.dataclass
class Structure:
    coords: np.ndarray
    atom_b_factor: np.ndarray


@dataclasses.dataclass
class InferenceResult:
    predicted_structure: Structure
    numerical_data: dict
    metadata: dict


def make_model_config(*, flash_attention_implementation="triton", num_diffusion_samples=5, num_recycles=10):
    global_config = types.SimpleNamespace(bfloat16="all", flash_attention_implementation=flash_attention_implementation)
    return types.SimpleNamespace(global_config=global_config, num_recycles=num_recycles, num_samples=num_diffusion_samples)


class ModelRunner:
    def __init__(self, device, num_samples):
        if os.environ.get("STANDIN_LOAD_LOG"):
            with open(os.environ["STANDIN_LOAD_LOG"], "a") as log:
                log.write(f"{os.getpid()}\n")
        time.sleep(float(os.environ.get("STANDIN_LOAD_SECONDS", "0")))
        self._device = device
        self._num_samples = num_samples

    def run_inference(self, featurised_example, rng_key):
        if os.environ.get("STANDIN_PREDICT_NATIVE") == "1":
            _native_wait(float(os.environ.get("STANDIN_PREDICT_SECONDS", "0")))
        else:
            time.sleep(float(os.environ.get("STANDIN_PREDICT_SECONDS", "0")))
        once = os.environ.get("STANDIN_INFERENCE_ERROR")
        if once and not os.path.exists(once):
            pathlib.Path(once).touch()
            raise ValueError("stand-in inference failed on this try (STANDIN_INFERENCE_ERROR)")
        needs = int(os.environ.get("STANDIN_NEEDS_SLURM_MEM_MB", "0"))
        if needs and int(os.environ.get("SLURM_MEM_PER_NODE", "0")) < needs:
            os.kill(os.getpid(), signal.SIGKILL)
        mask = jnp.ones((featurised_example["num_tokens"], 4))
        config = diffusion_head.SampleConfig(num_samples=self._num_samples)
        nan = os.environ.get("STANDIN_DENOISER") == "nan"
        denoiser = (lambda x, t: x * jnp.nan) if nan else diffusion_head.DiffusionHead()
        out = jax.jit(lambda key: diffusion_head.sample(denoiser, mask, key, config))(rng_key)
        return {"diffusion_samples": {"atom_positions": np.asarray(out["atom_positions"])}}

    def extract_inference_results(self, batch, result, target_name):
        results = []
        for positions in result["diffusion_samples"]["atom_positions"]:
            coords = positions.reshape(-1, 3)
            results.append(
                InferenceResult(
                    predicted_structure=Structure(coords=coords, atom_b_factor=np.full(len(coords), 50.0)),
                    numerical_data={"full_pae": np.ones((batch["num_tokens"],) * 2)},
                    metadata={"ptm": 0.5, "iptm": float("nan"), "ranking_score": 0.5},
                )
            )
        return results


def _trunk(sequence, bucket, bf16):
    """A small masked-attention trunk over the padded tokens, in bf16 like AF3's unless told f32.

    What the fidelity tests need of a trunk: padding to the bucket is masked,
    so the real tokens' embeddings depend on the bucket only through summation
    order, and the precision setting changes the arithmetic.
    """
    dtype = jnp.bfloat16 if bf16 else jnp.float32
    n = len(sequence)
    k_in, k_q, k_k, k_pair = jax.random.split(jax.random.PRNGKey(0), 4)
    w_in = jax.random.normal(k_in, (21, 32)) / 4
    w_q, w_k = jax.random.normal(k_q, (32, 32)) / 6, jax.random.normal(k_k, (32, 32)) / 6
    w_pair = jax.random.normal(k_pair, (32, 16)) / 6
    residues = jnp.array(["ACDEFGHIKLMNPQRSTVWYX".find(c) % 21 for c in sequence] + [20] * (bucket - n))
    mask = jnp.arange(bucket) < n

    @jax.jit
    def run(residues):
        x = jax.nn.one_hot(residues, 21) @ w_in
        for _ in range(4):
            xd = x.astype(dtype)
            logits = ((xd @ w_q.astype(dtype)) @ (xd @ w_k.astype(dtype)).T).astype(jnp.float32) / jnp.sqrt(32.0)
            attention = jax.nn.softmax(jnp.where(mask[None, :], logits, -1e9), axis=-1)
            x = x + (attention.astype(dtype) @ xd).astype(jnp.float32)
        pair = (x[:, None, :] * x[None, :, :]).astype(dtype) @ w_pair.astype(dtype)
        return x, pair.astype(jnp.float32)

    single, pair = run(residues)
    return np.asarray(single)[:n], np.asarray(pair)[:n, :n]


def _native_wait(seconds):
    """About ``seconds`` in native code that releases the GIL and never checks for signals (PBKDF2 rounds)."""
    import hashlib

    start = time.monotonic()
    hashlib.pbkdf2_hmac("sha256", b"standin", b"salt", 20000)
    per_round = max((time.monotonic() - start) / 20000, 1e-9)
    while time.monotonic() - start < seconds:  # the rounds of one call must fit a C int
        left = seconds - (time.monotonic() - start)
        hashlib.pbkdf2_hmac("sha256", b"standin", b"salt", max(1, min(int(left / per_round), 2**31 - 1)))


def _inputs():
    if _JSON_PATH.value:
        return [pathlib.Path(_JSON_PATH.value)]
    return sorted(pathlib.Path(_INPUT_DIR.value).glob("*.json"))


def main(_):
    if _JAX_COMPILATION_CACHE_DIR.value is not None:
        jax.config.update("jax_compilation_cache_dir", _JAX_COMPILATION_CACHE_DIR.value)
    if _FLASH_ATTENTION_IMPLEMENTATION.value == "triton":
        raise ValueError("triton attention needs a GPU")
    gpu_devices = jax.local_devices(backend='gpu')
    if gpu_devices:
        if float(gpu_devices[_GPU_DEVICE.value].compute_capability) < 6.0:
            raise ValueError("compute capability too low")
    devices = jax.local_devices(backend='gpu')
    config = make_model_config(
        flash_attention_implementation=_FLASH_ATTENTION_IMPLEMENTATION.value,
        num_diffusion_samples=_NUM_DIFFUSION_SAMPLES.value,
        num_recycles=_NUM_RECYCLES.value,
    )
    runner = ModelRunner(devices[_GPU_DEVICE.value], config.num_samples) if _RUN_INFERENCE.value else None
    for path in _inputs():
        (fold_input,) = folding_input.load_fold_inputs_from_path(path)  # AF3 reads its inputs through its loader too
        name = fold_input["name"]
        out_dir = pathlib.Path(_OUTPUT_DIR.value) / name
        out_dir.mkdir(parents=True, exist_ok=True)
        if _RUN_DATA_PIPELINE.value:
            for entry in fold_input["sequences"]:
                (kind, chain), = entry.items()
                if kind in ("protein", "rna") and chain.get("unpairedMsa") is None:
                    chain.update(unpairedMsa=f">query\n{chain['sequence']}\n", pairedMsa="", templates=[])
                    if os.environ.get("STANDIN_DATA_LOG"):
                        with open(os.environ["STANDIN_DATA_LOG"], "a") as log:
                            log.write(f"{chain['sequence']}\n")
        (out_dir / f"{name}_data.json").write_text(json.dumps(fold_input))
        if runner is None:
            continue
        num_tokens = sum(len(s["protein"]["sequence"]) for s in fold_input["sequences"])
        ranking, best = [], None
        for seed in fold_input["modelSeeds"]:
            batch = {"num_tokens": num_tokens}
            result = runner.run_inference(batch, jax.random.PRNGKey(seed))
            samples = runner.extract_inference_results(batch, result, name)
            if _SAVE_EMBEDDINGS.value:
                sequence = "".join(s["protein"]["sequence"] for s in fold_input["sequences"])
                bucket = next(b for b in map(int, _BUCKETS.value) if b >= len(sequence))
                single, pair = _trunk(sequence, bucket, config.global_config.bfloat16 == "all")
                embeddings_dir = out_dir / f"seed-{seed}_embeddings"
                embeddings_dir.mkdir()
                np.savez(embeddings_dir / f"{name}_seed-{seed}_embeddings.npz", single_embeddings=single, pair_embeddings=pair)
            for index, sample in enumerate(samples):
                sample_dir = out_dir / f"seed-{seed}_sample-{index}"
                sample_dir.mkdir()
                np.savetxt(sample_dir / f"{name}_model.xyz", sample.predicted_structure.coords)
                score = (seed % 7) / 10 + index / 100
                ranking.append(f"{seed},{index},{score}")
                if best is None or score > best[0]:
                    best = (score, sample)
        (out_dir / f"{name}_ranking_scores.csv").write_text("\n".join(["seed,sample,ranking_score", *ranking]) + "\n")
        np.savetxt(out_dir / f"{name}_model.xyz", best[1].predicted_structure.coords)
        (out_dir / f"{name}_summary_confidences.json").write_text(json.dumps({"ranking_score": best[0]}))
        # What the stand-in was asked to run with, for the CLI tests.
        (out_dir / "standin_settings.json").write_text(json.dumps({
            "bfloat16": config.global_config.bfloat16, "buckets": _BUCKETS.value,
            "attention": config.global_config.flash_attention_implementation,
            "cache": _JAX_COMPILATION_CACHE_DIR.value, "cpus": len(os.sched_getaffinity(0)),
        }))
        plugin = sys.modules.get("af3_cpu_patch")  # the patches installed in this process, if any
        (out_dir / "standin_patches.json").write_text(json.dumps([r.patch for r in plugin.report()] if plugin else []))

if __name__ == "__main__":
    flags.mark_flags_as_required(["output_dir"])
    app.run(main)
