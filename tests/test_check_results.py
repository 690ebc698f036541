"""The finiteness checks tell AF3's deliberate NaNs from broken numerics."""

from __future__ import annotations

import types

import numpy as np
import pytest

from af3_cpu_patch.patches import check_results


def sample(**metadata):
    structure = types.SimpleNamespace(coords=np.zeros((4, 3)), atom_b_factor=np.full(4, 70.0))
    data = {"full_pae": np.ones((3, 3)), "contact_probs": np.zeros((3, 3))}
    return types.SimpleNamespace(predicted_structure=structure, numerical_data=data, metadata=metadata)


def check(result):
    check_results.check_arrays("confidences", check_results.extracted_arrays(0, result))


# A protein with a Mg ion: AF3's chain_pair_pae sets the ion's intra-chain PAE to
# NaN (no valid frame), and one chain's interface scores are NaN as well.
ION_METADATA = {
    "pae_ichain": np.array([1.5, np.nan]),
    "pae_xchain": np.array([np.nan, np.nan]),
    "chain_pair_pae_min": np.array([[0.3, 2.0], [2.1, np.nan]]),
    "iptm": np.nan,
    "ptm": 0.4,
}


def test_nans_that_af3_writes_itself_pass():
    check(sample(**ION_METADATA))


@pytest.mark.parametrize("where", ["coords", "ptm", "full_pae"])
def test_nan_in_a_score_af3_always_defines_stops_the_run(where):
    result = sample(**ION_METADATA)
    if where == "coords":
        result.predicted_structure.coords[1, 0] = np.nan
    elif where == "ptm":
        result.metadata["ptm"] = np.nan
    else:
        result.numerical_data["full_pae"][0, 2] = np.inf
    with pytest.raises(check_results.NonFiniteResult, match="sample 0"):
        check(result)
