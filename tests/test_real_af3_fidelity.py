"""Fidelity of the CPU defaults that change padding or numerics (real AF3, random weights).

Trunk outputs (single and pair embeddings of the real tokens) at a CPU bucket
vs AF3's smallest stock bucket (256), with an f32 trunk vs AF3's bf16, and with
tokamax's chunked XLA attention vs AF3's XLA attention, must agree within the
stated tolerances; so must the final coordinates with the diffusion head's
products in one bf16 pass vs in float32.  Skipped without a real AF3.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from af3_cpu_patch.host import cpu_info
from af3_cpu_patch.host import memory_forecast
from tests import real_af3

# Relative RMS difference of the real-token embeddings (rms(a - b) / rms(b)).
# Measured on v3.0.4 with random weights (AMD EPYC, jax 0.10.2), 31 residues, 1 recycle:
#   bucket 32 vs 256: single 1.3e-4, pair 3.8e-3;  f32 vs bf16: single 2.3e-3, pair 4.3e-3.
#   14 of those residues, bucket 16 vs 256: single bit-identical, pair 3.9e-3.
#   xla_chunked vs xla attention (f32, bucket 32): bit-identical (XLA compiles both alike at this size).
PADDING_TOLERANCE = 0.02  # CPU bucket vs 256, both bf16: only padding and summation order differ
PRECISION_TOLERANCE = 0.03  # f32 vs bf16 trunk at the same bucket
ATTENTION_TOLERANCE = 1e-4  # xla_chunked vs xla attention, f32, same bucket: only rounding differs

# RMSD (Angstrom) of the final coordinates, the diffusion head's default-precision
# products in one bf16 pass vs in float32.  Measured on v3.0.4 (AMD EPYC with
# AVX512-BF16, jax 0.10.2), 31 residues at bucket 32, 1 sample, 200 steps, random
# weights with the zero-initialised layers filled (random-weights --fill-zero-init):
#   bf16 pass vs f32: 0.0015 (max 0.0057);  TF32, a GPU's default, vs f32: 0.0002 (max 0.0008);
#   for scale, bucket 48 vs 32 (f32): 0.0011 (max 0.0056).
#   With the transitions' GLU product in the bf16 pass too (later): bf16 0.0015, TF32 0.0008.
DIFFUSION_PRECISION_TOLERANCE_A = 0.02

# The trunk's bf16 products with float32 results rounded to bf16 (af3_cpu_patch.patches.trunk_products,
# the CLI's on CPUs with native bf16) vs stock's bf16 -> bf16 products: the same values up to the
# kernels' summation order.  Measured on v3.0.4 (AMD EPYC, AVX512-BF16, jax 0.10.2), filled random
# weights, 31 residues at bucket 32, 1 recycle, 1 sample: single 1.7e-2, pair 2.0e-2, coordinates
# RMSD 0.0010 A.  For scale, the same weights (whose filled layers amplify any rounding through the
# 48 blocks): bucket 48 vs 32, single 1.7e-2, pair 1.9e-2; f32 vs bf16 trunk, 1.9e-2, 3.0e-2 and 0.0010 A.
BF16_PRODUCTS_TOLERANCE = 0.05  # relative RMS of the embeddings
BF16_PRODUCTS_TOLERANCE_A = 0.02  # RMSD of the coordinates

# An MSA cut to its row bucket (msa-rows) vs padded to AF3's 16384 rows (1024 used), bf16 trunk,
# filled random weights, bucket 32: the same rows, in another order.  Measured on v3.0.4 (AMD EPYC,
# AVX512-BF16, jax 0.10.2), 1 and 6 rows cut to 16: bit-identical embeddings.  The tolerance allows
# for a summation order that rounds differently elsewhere (bucket 48 vs 32 above: 1.7e-2).
MSA_ROWS_TOLERANCE = 0.05


# The trunk's embeddings do not depend on the diffusion head: tests that compare only them run 1 step.
EMBEDDINGS_ONLY_STEPS = 1


def _embeddings(af3, model_dir, protein_json, tmp_path, bucket, precision, attention="xla", residues=None, recycles=1):
    n = residues or len(real_af3.PROTEIN_SEQUENCE)
    if residues:
        protein_json = tmp_path / f"protein_{residues}.json"
        protein_json.write_text(json.dumps(real_af3.protein_of_length(residues)))
    error, arrays = real_af3.forward(
        af3, model_dir, protein_json, tmp_path / f"b{bucket}_{precision}_{attention}.npz", "patched",
        bucket=bucket, precision=precision, attention=attention, embeddings=1, steps=EMBEDDINGS_ONLY_STEPS,
        recycles=recycles,
    )
    if error and "needs AF3 v3.0.2 or later" in error:
        pytest.skip(f"this AF3 has no tokamax attention: {error}")
    assert error is None, error
    return arrays["single_embeddings"][:n], arrays["pair_embeddings"][:n, :n]


def _relative_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


# (residues, CPU bucket): the full test protein.  One trunk pass (no recycle): at
# bucket 256 a pass is minutes on 2 cores, and padding acts the same in every pass.
@pytest.mark.parametrize("residues, bucket", [(None, 32)])
def test_cpu_bucket_matches_stock_bucket(af3, model_dir, protein_json, tmp_path, residues, bucket):
    assert bucket == memory_forecast.bucket_for(residues or len(real_af3.PROTEIN_SEQUENCE))
    stock = _embeddings(af3, model_dir, protein_json, tmp_path, 256, "bf16", residues=residues, recycles=0)
    small = _embeddings(af3, model_dir, protein_json, tmp_path, bucket, "bf16", residues=residues, recycles=0)
    for name, a, b in zip(("single", "pair"), small, stock):
        error = _relative_rms(a, b)
        print(f"bucket {bucket} vs 256, {name}: relative RMS {error:.2e}")
        assert error < PADDING_TOLERANCE, (name, error)


def test_f32_trunk_matches_bf16_trunk(af3, model_dir, protein_json, tmp_path):
    bf16 = _embeddings(af3, model_dir, protein_json, tmp_path, 32, "bf16")
    f32 = _embeddings(af3, model_dir, protein_json, tmp_path, 32, "f32")
    for name, a, b in zip(("single", "pair"), f32, bf16):
        error = _relative_rms(a, b)
        print(f"f32 vs bf16, {name}: relative RMS {error:.2e}")
        assert np.isfinite(a).all()
        assert error < PRECISION_TOLERANCE, (name, error)


def test_chunked_attention_matches_xla_attention(af3, model_dir, protein_json, tmp_path):
    xla = _embeddings(af3, model_dir, protein_json, tmp_path, 32, "f32", "xla")
    chunked = _embeddings(af3, model_dir, protein_json, tmp_path, 32, "f32", "xla_chunked")
    for name, a, b in zip(("single", "pair"), chunked, xla):
        error = _relative_rms(a, b)
        print(f"xla_chunked vs xla attention, {name}: relative RMS {error:.2e}")
        assert np.isfinite(a).all()
        assert error < ATTENTION_TOLERANCE, (name, error)


# The bf16 passes are defaults only where the CPU computes bf16 natively; elsewhere XLA
# emulates bf16 and these full-length comparisons would measure a setting nobody runs.
needs_native_bf16 = pytest.mark.skipif(
    not cpu_info.native_bf16(), reason="the bf16 passes are on by default only on CPUs with native bf16; this one has none"
)


@needs_native_bf16
def test_bf16_products_with_f32_results_match_stock_products(af3, filled_model_dir, protein_json, tmp_path):
    """The CLI's trunk products (bf16 operands, float32 result rounded to bf16) vs stock's bf16 -> bf16 ones."""
    from af3_cpu_patch.patches import trunk_products

    runs = {}
    for on in ("0", "1"):
        error, arrays, report = real_af3.forward(
            af3, filled_model_dir, protein_json, tmp_path / f"products{on}.npz", "patched", with_report=True,
            bucket=32, precision="bf16", bf16_products=on, embeddings=1,
        )
        assert error is None, error
        runs[on] = arrays
    for patch in trunk_products.PATCHES:
        assert report[patch.name] == "applied", (patch.name, report[patch.name])
    n = len(real_af3.PROTEIN_SEQUENCE)
    for name, key, cut in (("single", "single_embeddings", np.s_[:n]), ("pair", "pair_embeddings", np.s_[:n, :n])):
        ours, stock = runs["1"][key][cut], runs["0"][key][cut]
        error = _relative_rms(ours, stock)
        print(f"bf16 products with f32 results vs stock's, {name}: relative RMS {error:.2e}")
        assert np.isfinite(ours).all()
        assert not np.array_equal(ours, stock), "the trunk's products were not rerouted"
        assert error < BF16_PRODUCTS_TOLERANCE, (name, error)
    mask = np.any(runs["0"]["positions"] != 0, axis=-1)  # AF3 zeroes the padding atoms
    coordinates = _rmsd(runs["1"]["positions"], runs["0"]["positions"], mask)
    print(f"bf16 products with f32 results vs stock's, coordinates: RMSD {coordinates:.5f} A")
    assert coordinates < BF16_PRODUCTS_TOLERANCE_A


@pytest.mark.parametrize("msa_rows", [1, 6])
def test_msa_cut_to_its_row_bucket_matches_afs_padding(af3, filled_model_dir, tmp_path, msa_rows):
    """msa-rows: the MSA stack on a row bucket (16) instead of 1024 rows, padding masked in both."""
    from af3_cpu_patch.patches import msa_rows as rows_policy

    fold_input = real_af3.protein_with_msa(msa_rows)
    input_json = tmp_path / "protein_msa.json"
    input_json.write_text(json.dumps(fold_input))
    runs = {}
    for name, without in (("cut", ""), ("stock", "msa-rows")):
        error, arrays, report = real_af3.forward(
            af3, filled_model_dir, input_json, tmp_path / f"msa_{name}.npz", "patched", with_report=True,
            bucket=32, precision="bf16", without=without, embeddings=1, steps=EMBEDDINGS_ONLY_STEPS,
        )
        assert error is None, error
        runs[name] = arrays
    assert report[rows_policy.EVOFORMER_PATCH] == "applied"
    assert int(runs["cut"]["msa_rows"]) == rows_policy.rows_for(msa_rows) < int(runs["stock"]["msa_rows"])
    n = len(real_af3.PROTEIN_SEQUENCE)
    for name, key, cut in (("single", "single_embeddings", np.s_[:n]), ("pair", "pair_embeddings", np.s_[:n, :n])):
        ours, stock = runs["cut"][key][cut], runs["stock"][key][cut]
        error = _relative_rms(ours, stock)
        print(f"{msa_rows} MSA rows, cut to a bucket vs AF3's padding, {name}: relative RMS {error:.2e}")
        assert np.isfinite(ours).all()
        assert error < MSA_ROWS_TOLERANCE, (name, error)


def _rmsd(a, b, mask):
    return float(np.sqrt(np.mean(np.sum((a[mask] - b[mask]) ** 2, axis=-1))))


@needs_native_bf16
def test_bf16_diffusion_products_match_f32(af3, filled_model_dir, protein_json, tmp_path):
    positions = {}
    runs = {
        "stock": ("stock", "f32", ()),
        "f32 without speed patches": ("patched", "f32", real_af3.SPEED_PATCHES),
        "f32": ("patched", "f32", ()),
        "bf16": ("patched", "bf16", ()),
        "tf32": ("patched", "tf32", ()),
    }
    for name, (variant, setting, without) in runs.items():
        error, arrays = real_af3.forward(
            af3, filled_model_dir, protein_json, tmp_path / f"{name.replace(' ', '_')}.npz", variant,
            bucket=32, precision="bf16", diffusion_precision=setting, without=",".join(without),
        )
        assert error is None, error
        positions[name] = arrays["positions"]
    f32 = positions["f32"]
    mask = np.any(f32 != 0, axis=-1)  # AF3 zeroes the padding atoms
    if np.isfinite(positions["stock"]).all():  # v3.0.4, or a CPU whose XLA does not fuse the NaN's FMA
        exact = positions["f32 without speed patches"]
        assert exact.tobytes() == positions["stock"].tobytes(), "with f32 the rewritten products must be AF3's own"
        speed_rmsd = _rmsd(f32, positions["stock"], mask)
        print(f"coordinates with the speed patches vs stock (f32 products): RMSD {speed_rmsd:.5f} A")
        assert speed_rmsd < real_af3.SPEED_PATCHES_TOLERANCE_A
    assert np.isfinite(positions["bf16"]).all() and mask.sum() > 200
    assert positions["bf16"].tobytes() != f32.tobytes(), "the setting did not reach the diffusion head"
    bf16_rmsd, tf32_rmsd = _rmsd(positions["bf16"], f32, mask), _rmsd(positions["tf32"], f32, mask)
    print(f"coordinates vs f32 products: bf16 pass RMSD {bf16_rmsd:.4f} A, TF32 (a GPU's default) {tf32_rmsd:.4f} A")
    assert bf16_rmsd < DIFFUSION_PRECISION_TOLERANCE_A
    assert tf32_rmsd < bf16_rmsd  # TF32 keeps 10 mantissa bits, bf16 7: the emulation must show it