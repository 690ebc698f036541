"""Pad AF3's flat atom list to the input's atoms, not to 24 slots per padded token.

Why: AF3's atom transformers work on a flat list of atoms padded to 24 slots
per token of the bucket (``average_num_atoms_per_token``, sized for the
largest residues). A protein has about 8 heavy atoms per residue, so two thirds
of those slots are padding, and the diffusion head's atom transformers (3 + 3
blocks, for every sample at each of the 200 steps) compute on all of them.

A real atom's result does not depend on how many padding slots follow: its
block of 32 queries attends to 128 keys that AF3 takes from the real atoms
(it shifts each key window inside them), and padding slots are masked. So the
list is padded to the input's atoms rounded up to a whole key window (128):
a few sizes per bucket rather than one per atom count, so the compilation
cache still hits for inputs of about the same size, and never more than AF3's.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

from af3_cpu_patch.engine.patch import Numerics, WrapperPatch
from af3_cpu_patch.patches.targets import (
    FEATURES,
)


def flat_atoms(real_atoms: int, stock_atoms: int, queries_subset_size: int, keys_subset_size: int) -> int:
    """Slots of the flat atom list: the real atoms rounded up to whole key windows, at most AF3's."""
    step = math.lcm(queries_subset_size, keys_subset_size)
    return min(-(-max(real_atoms, 1) // step) * step, stock_atoms)


def compute_features_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for ``features.AtomCrossAtt.compute_features``: a smaller ``padding_shapes.num_atoms``."""
    bound = inspect.signature(wrapped).bind(*args, **kwargs)
    layout, shapes = bound.arguments["all_token_atoms_layout"], bound.arguments["padding_shapes"]
    real_atoms = int(layout.atom_name.astype(bool).sum())
    num_atoms = flat_atoms(
        real_atoms, shapes.num_atoms, bound.arguments["queries_subset_size"], bound.arguments["keys_subset_size"]
    )
    if num_atoms < shapes.num_atoms:
        bound.arguments["padding_shapes"] = dataclasses.replace(shapes, num_atoms=num_atoms)
    return wrapped(*bound.args, **bound.kwargs)


ATOM_SLOTS = WrapperPatch(
    name="atom-slots",
    why=(
        "AF3 pads the flat atom list of its atom transformers to 24 slots per token of the bucket; a protein "
        "has about 8 atoms per residue. Fewer padding slots, same results for the real atoms, less diffusion work."
    ),
    modules=FEATURES,
    function="AtomCrossAtt.compute_features",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    parameters=("all_token_atoms_layout", "queries_subset_size", "keys_subset_size", "padding_shapes"),
    wrapper=compute_features_wrapper,
)


PATCHES = (ATOM_SLOTS,)
