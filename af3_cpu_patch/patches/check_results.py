"""Stop a run at the first non-finite coordinate or confidence.

Stock AF3 with NaN coordinates keeps every confidence finite and only fails
later, inside ``copy_and_update_atoms`` ("Column x must not contain NaN/inf
values") or scipy's cKDTree -- far from the cause.  These checks run right
after inference (on ``diffusion_samples.atom_positions`` itself) and again
before anything is written, and name the stage and the first bad array.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np

from af3_cpu_patch.engine.patch import Numerics, WrapperPatch
from af3_cpu_patch.patches.targets import (
    RUN_ALPHAFOLD,
)

# Metadata that AF3 legitimately leaves NaN: interface scores when there is no
# interface (a single chain), and the averages and rankings built from them;
# the per-chain PAE summaries of a chain with no valid frame (fewer than three
# non-colinear atoms: a metal ion), which AF3's ``chain_pair_pae`` sets to NaN.
LEGITIMATE_NAN = ("iptm", "interface", "xchain", "ichain", "cross_chain", "chain_pair", "ranking_confidence")


class NonFiniteResult(RuntimeError):
    """AF3 produced NaN/inf where a valid prediction has none."""

    def __init__(self, stage: str, array: str, bad: int, total: int):
        self.stage, self.array, self.bad, self.total = stage, array, bad, total
        super().__init__(
            f"{stage}: {array} has {bad} of {total} values NaN/inf; nothing was written. "
            "Re-run with the af3_cpu_patch numerics patches applied (af3-cpu doctor shows them)."
        )


def legitimately_nan(name: str) -> bool:
    return any(part in name for part in LEGITIMATE_NAN)


def check_arrays(stage: str, arrays: Iterable[tuple[str, Any]]) -> None:
    """Raise :class:`NonFiniteResult` for the first array with a NaN/inf."""
    for name, value in arrays:
        try:
            array = np.asarray(value)
        except Exception:  # noqa: BLE001 - not array-like: nothing to check
            continue
        if array.dtype.kind not in "fc" or array.size == 0:
            continue
        finite = np.isfinite(array)
        if not finite.all():
            raise NonFiniteResult(stage, name, int(array.size - finite.sum()), int(array.size))


def inference_arrays(result: Any) -> list[tuple[str, Any]]:
    samples = result["diffusion_samples"]
    return [("diffusion_samples.atom_positions", samples["atom_positions"])]


def extracted_arrays(index: int, inference_result: Any) -> list[tuple[str, Any]]:
    prefix = f"sample {index}"
    structure = inference_result.predicted_structure
    arrays = [(f"{prefix} coordinates", getattr(structure, "coords", None))]
    arrays.append((f"{prefix} atom pLDDT", getattr(structure, "atom_b_factor", None)))
    arrays += [(f"{prefix} {k}", v) for k, v in inference_result.numerical_data.items()]
    arrays += [(f"{prefix} {k}", v) for k, v in inference_result.metadata.items() if not legitimately_nan(k)]
    return arrays


def check_inference_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for ``ModelRunner.run_inference``."""
    result = wrapped(*args, **kwargs)
    check_arrays("model inference", inference_arrays(result))
    return result


def check_extracted_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for ``ModelRunner.extract_inference_results`` (``extract_structures`` before v3.0.2)."""
    results = wrapped(*args, **kwargs)
    for index, inference_result in enumerate(results):
        check_arrays("confidences and structure extraction", extracted_arrays(index, inference_result))
    return results


CHECK_INFERENCE = WrapperPatch(
    name="check-results-inference",
    why=(
        "With NaN coordinates stock AF3 keeps every confidence finite and dies later in "
        "copy_and_update_atoms; stop right after inference, naming the array."
    ),
    modules=RUN_ALPHAFOLD,
    function="ModelRunner.run_inference",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    wrapper=check_inference_wrapper,
)


CHECK_EXTRACTED = WrapperPatch(
    name="check-results-extracted",
    why="Check coordinates and confidences of every sample before AF3 writes them.",
    modules=RUN_ALPHAFOLD,
    function="ModelRunner.extract_inference_results",
    versions=("3.0.2", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    wrapper=check_extracted_wrapper,
)


CHECK_EXTRACTED_STRUCTURES = dataclasses.replace(
    CHECK_EXTRACTED, name="check-results-structures", function="ModelRunner.extract_structures", versions=("3.0.0", "3.0.1")
)


PATCHES = (CHECK_INFERENCE, CHECK_EXTRACTED, CHECK_EXTRACTED_STRUCTURES)
