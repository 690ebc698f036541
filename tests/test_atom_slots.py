"""The atom-slots patch: AF3's flat atom list padded to the input's atoms, on the stand-in.

Bit-identity of the results on a real AF3 is in ``test_real_af3_layout.py``.
"""

from __future__ import annotations

import pytest

from af3_cpu_patch.patches import atom_slots
from tests.helpers import STANDIN, run_python


@pytest.mark.parametrize(
    "real_atoms, tokens, expected",
    [
        (329, 40, 384),  # a 40-residue protein (AF3: 960)
        (384, 40, 384),
        (385, 40, 512),
        (940, 40, 960),  # never more than AF3's 24 per token
        (100, 16, 128),  # at least one key window of 128 atoms
    ],
)
def test_slots_are_the_real_atoms_in_whole_key_windows(real_atoms, tokens, expected):
    assert atom_slots.flat_atoms(real_atoms, tokens * 24, 32, 128) == expected


PATCHED_CALL = """
import json, sys
import numpy as np
import af3_cpu_patch
from af3_cpu_patch.patches import CLI_PATCHES
af3_cpu_patch.install(CLI_PATCHES)
from alphafold3.model import features

def call(real_atoms, tokens):
    names = np.array([["CA"] * 8 + [""] * 16] * tokens)
    names.flat[np.flatnonzero(names.ravel())[real_atoms:]] = ""
    shapes = features.PaddingShapes(num_tokens=tokens, msa_size=1, num_chains=1, num_templates=0, num_atoms=tokens * 24)
    return features.AtomCrossAtt.compute_features(
        all_token_atoms_layout=features.StandinLayout(names), queries_subset_size=32, keys_subset_size=128,
        padding_shapes=shapes)

patched = call(300, 40)
positional = features.AtomCrossAtt.compute_features(features.StandinLayout(np.array([["CA"] * 8 + [""] * 16] * 40)), 32, 128,
    features.PaddingShapes(40, 1, 1, 0, 960))
report = {r.patch: str(r.status) for r in af3_cpu_patch.report()}
af3_cpu_patch.uninstall()
stock = call(300, 40)
print(json.dumps({"patched": patched, "positional": positional["num_atoms"], "stock": stock, "report": report}))
"""


def test_patch_shrinks_the_padding_and_keeps_the_key_windows():
    result = run_python(PATCHED_CALL, pythonpath=[STANDIN])
    assert result["report"]["atom-slots"] == "applied"
    patched, stock = result["patched"], result["stock"]
    assert (patched["num_atoms"], stock["num_atoms"]) == (384, 960)
    assert result["positional"] == 384
    # every query block of the real atoms attends to the same keys as with AF3's padding
    real_blocks = -(-300 // 32)
    assert patched["key_windows"][:real_blocks] == stock["key_windows"][:real_blocks]
    assert patched["num_subsets"] < stock["num_subsets"]
