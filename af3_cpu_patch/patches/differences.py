"""How far each patch that changes numbers takes AF3's output from stock's, as measured.

One table, so that the patch declarations, ``doctor`` and the docs state the
same measurements.  Each entry says what was compared, by how much it
differed and where it was measured (real AF3, random weights of the real
shapes; "filled": ``af3-cpu random-weights --fill-zero-init``, which makes
AF3's zero-initialised layers count).
"""

SPEED = (
    "same arithmetic in another loop shape (with shared-noise-level, diffusion-steps-rolled and "
    "diffusion-layers-unrolled together): coordinates 0.00001 A RMSD from stock with float32 products "
    "(v3.0.4, 31 residues, 200 steps, filled weights, AMD EPYC AVX512-BF16)"
)

PRECISION_POLICY = (
    "trunk in float32 on CPUs without native bf16 (stock: bf16): single/pair embeddings 2.3e-3/4.3e-3 relative "
    "RMS (v3.0.4, 31 residues, AMD EPYC); tokamax's chunked attention (v3.0.2+) and CPU row blocks: "
    "bit-identical where tested (32, 128 and 256 tokens)"
)

DIFFUSION_BF16 = (
    "only with --diffusion-precision bf16 (auto: CPUs with native bf16): coordinates 0.0015 A RMSD (max 0.0057) "
    "from float32 products (v3.0.4, 31 residues, filled weights, AMD EPYC AVX512-BF16); with f32, AF3's own products"
)

MSA_ROWS = (
    "the MSA stack on a row bucket instead of 1024 padded rows, padding masked in both: 1 and 6 rows cut to 16 "
    "gave bit-identical embeddings (v3.0.4, filled weights, AMD EPYC AVX512-BF16); other counts may round differently"
)

TRUNK_PRODUCTS = (
    "only on CPUs with native bf16: bf16 products with float32 results, rounded: embeddings 1.7e-2/2.0e-2 "
    "relative RMS, coordinates 0.0010 A RMSD from stock's bf16 products (v3.0.4, 31 residues, filled weights, "
    "AMD EPYC AVX512-BF16)"
)

LOGITS_LAYOUT = (
    "only with --diffusion-precision bf16, whose products differ from stock's anyway; not checked for bit-identity"
)
