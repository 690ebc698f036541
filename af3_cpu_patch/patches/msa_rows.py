"""An MSA of fewer than 1024 rows is padded to a row bucket, not to 16384 rows of which the trunk uses 1024.

Why: AF3 pads every input's MSA features to ``msa_crop_size`` (16384) rows,
and each trunk pass shuffles them (rows with any unmasked position first) and
runs its 4-block MSA stack on the first ``num_msa`` (1024).  An input with
fewer rows -- no MSA search, a designed or orphan protein, a peptide -- pays
for 1024 rows all the same, most of them padding: at 64 tokens a trunk pass
took 2.20 s with AF3's padding and 1.98 s with 16 rows (docs/benchmarks.md, "MSA rows").

Padding rows add nothing: the outer product mean, the MSA stack's only way
into the pair, masks them out (``mask * act`` and a mask-count norm), and the
stack's attention and transition treat rows independently (the attention's
mask is a max over rows, unchanged by masked rows).  So when an input has at
most ``num_msa`` rows, its MSA features are cut to the smallest of
:data:`ROW_BUCKETS` that holds them, and ``Evoformer`` takes at most as many
rows as there are (``msa-rows-evoformer``).  Every real row is used, as in
stock; the shuffle orders them differently (it draws over fewer rows), which
may change the order of the outer product mean's sum and so float rounding
(with 1 and 6 rows the embeddings were bit-identical).  With more rows nothing
changes: stock's random choice of 1024 rows stays.
"""

from __future__ import annotations

import dataclasses

from af3_cpu_patch.engine import hooks
from af3_cpu_patch.engine.patch import Numerics, SourcePatch, WrapperPatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches import differences
from af3_cpu_patch.patches.targets import (
    EVOFORMER,
    FEATURES,
)

# AF3's Evoformer.Config.num_msa (v3.0.0-v3.0.4): the rows each trunk pass uses.
STOCK_NUM_MSA = 1024
# Row counts an MSA is padded to, as the token buckets: few sizes, so compiled models are reused.
ROW_BUCKETS = (16, 64, 256, STOCK_NUM_MSA)
EVOFORMER_PATCH = "msa-rows-evoformer"


def rows_for(real_rows: int) -> int | None:
    """The row bucket for an MSA of ``real_rows`` rows, or None: more than the trunk uses, keep AF3's."""
    return next((b for b in ROW_BUCKETS if b >= real_rows), None)


def compute_features_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for ``features.MSA.compute_features``: the padded MSA cut to its row bucket.

    Only while ``msa-rows-evoformer`` is in place: stock's Evoformer indexes
    ``num_msa`` rows whatever the MSA holds.
    """

    msa = wrapped(*args, **kwargs)
    rows = rows_for(int(msa.num_alignments))
    if rows is None or rows >= msa.rows.shape[0] or not hooks.applied(EVOFORMER_PATCH):
        return msa
    return dataclasses.replace(
        msa, rows=msa.rows[:rows], mask=msa.mask[:rows], deletion_matrix=msa.deletion_matrix[:rows]
    )


_MSA_ROWS_WHY = (
    "AF3 pads every MSA to 16384 rows and runs the trunk's MSA stack on 1024 of them; an MSA of fewer rows "
    "is cut to a row bucket (16, 64, 256, 1024) and the stack runs on those: padding rows are masked out of "
    "everything the stack passes on."
)


MSA_ROWS = WrapperPatch(
    name="msa-rows",
    why=_MSA_ROWS_WHY,
    modules=FEATURES,
    function="MSA.compute_features",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.MSA_ROWS,
    wrapper=compute_features_wrapper,
)


MSA_ROWS_EVOFORMER = SourcePatch(
    name=EVOFORMER_PATCH,
    why=_MSA_ROWS_WHY + " The Evoformer takes at most as many rows as the MSA has (msa-rows cuts only with this).",
    modules=EVOFORMER,
    function="Evoformer._embed_process_msa",
    rewrites=(
        Rewrite(
            "featurization.truncate_msa_batch(msa_batch, self.config.num_msa)",
            "featurization.truncate_msa_batch(msa_batch, min(self.config.num_msa, msa_batch.rows.shape[0]))",
        ),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.MSA_ROWS,
    requires_globals=(),  # the exact AST match is the check
)


PATCHES = (MSA_ROWS_EVOFORMER, MSA_ROWS)
