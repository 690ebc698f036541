"""Stand-in for AF3's ``model/features.py``: only what the atom-slots patch touches.

``AtomCrossAtt.compute_features`` pads the flat atom list to
``padding_shapes.num_atoms`` (AF3: 24 slots per token of the bucket) and, as
AF3 does, shifts each 128-key window inside the real atoms; the stand-in
returns those shapes and windows, so tests can see what padding it was given.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PaddingShapes:
    num_tokens: int
    msa_size: int
    num_chains: int
    num_templates: int
    num_atoms: int


@dataclasses.dataclass(frozen=True)
class StandinLayout:
    atom_name: np.ndarray  # (num_tokens, 24); '' marks an empty slot


class AtomCrossAtt:
    @classmethod
    def compute_features(cls, all_token_atoms_layout, queries_subset_size, keys_subset_size, padding_shapes):
        real = int(all_token_atoms_layout.atom_name.astype(bool).sum())
        centers = np.arange(queries_subset_size // 2, padding_shapes.num_atoms, queries_subset_size)
        windows = centers[:, None] + np.arange(-keys_subset_size // 2, keys_subset_size // 2)[None, :]
        for row in windows:
            if row[0] < 0:
                row -= row[0]
            elif row[-1] > real - 1:
                row -= row[-1] - (real - 1)
        return {"num_atoms": padding_shapes.num_atoms, "num_subsets": len(windows), "key_windows": windows.tolist()}
