"""Peak-memory forecast of a CPU run, before anything heavy is loaded.

Why: an AF3 run that runs out of memory dies after minutes of loading and
compiling, often taking the machine's other work with it (the OOM killer).
The peak RSS of ``af3-cpu predict`` grows with the token bucket (pair
activations are bucket x bucket); ``benchmarks/memory.py`` measures it per
bucket and fits ``a + b*bucket + c*bucket**2``, whose coefficients are below.
Tokens are counted from the input JSON without AF3: residues and nucleotides
one each, ligands and modified residues one per heavy atom (CCD components from
the table in :mod:`af3_cpu_patch.host.ccd_sizes`; others at an upper estimate, so
the forecast errs high).
"""

from __future__ import annotations

import dataclasses
import re

from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import forecast_time
from af3_cpu_patch.host import limits as host_limits
from af3_cpu_patch.host.ccd_sizes import LIGAND_TOKENS, MODIFIED_RESIDUE_TOKENS
from af3_cpu_patch.host import cache_dirs
from af3_cpu_patch.settings import effective_buckets

# Fitted by benchmarks/memory.py --diffusion-steps 20 --quadratic 4.41e-6: AF3 v3.0.4, af3-cpu
# defaults (CCD index, atom-slots, bf16 trunk on an AVX512-BF16 CPU), 5 samples, peak RSS
# 3.49 / 3.61 / 4.00 / 4.72 GB at buckets 32 / 64 / 128 / 256, each within 0.035 GB of the fit
# (benchmarks/measured/memory-v3.0.4-amd-epyc-avx512bf16-2core.json).  The bucket**2 coefficient
# is kept from the earlier fit (before the CCD index: 6.43 / 6.67 / 7.11 / 8.15 GB, 200 steps,
# memory-v3.0.4-amd-epyc-2core.json); a free fit gives 1.9e-6, which forecasts buckets past 256
# lower, and none past 256 has been measured.  Past 256 it is an extrapolation.
FIT_A_B_C = (3.345, 4.285e-3, 4.410e-6)
MARGIN = 1.10  # forecast = fit x margin: the fit is of one machine's runs
# Added to the fit since the diffusion transformer's layers are unrolled (diffusion-layers-unrolled):
# XLA keeps each layer's weights as used (bf16 with the bf16 pass) for the whole run instead of
# slicing them anew each step.  A full 64-residue run peaked at 4.11 GB against 3.64 GB before
# (benchmarks/measured/full-64-diffusion-speed-*.json vs full-64-diffusion-bf16-*.json); taken
# as independent of the bucket, like the weights.  Not re-fitted at other buckets yet.
UNROLLED_DIFFUSION_GB = 0.47
# The fit is of runs that read the CCD through af3-cpu's index (lazy_ccd); a run
# that unpickles AF3's whole CCD peaks this much higher (benchmarks/ccd_load.py:
# 6.24 vs 3.28 GB, benchmarks/measured/ccd-load-*.json).
WHOLE_CCD_GB = 2.96
# CCD components missing from ccd_sizes: ATP has 31 heavy atoms, heme 43; modified
# amino acids have 7-24 and modified nucleotides 20-25 once in a chain.
UNKNOWN_LIGAND_TOKENS = 64
UNKNOWN_MODIFIED_RESIDUE_TOKENS = 25

_SMILES_HEAVY_ATOM = re.compile(r"\[(?!H\d*[+\-\]])[^\]]+\]|Cl|Br|[BCNOSPFI]|[bcnops]")


def count_tokens(fold_input: dict) -> int:
    """AF3 tokens of an AF3-dialect input JSON (an upper estimate for CCD components not in ccd_sizes)."""
    total = 0
    for entry in fold_input.get("sequences", []):
        (kind, chain), = entry.items()
        ids = chain.get("id", "A")
        copies = len(ids) if isinstance(ids, list) else 1
        if kind in ("protein", "rna", "dna"):
            modified = [m.get("ptmType") or m.get("modificationType") for m in chain.get("modifications", [])]
            tokens = len(chain.get("sequence", "")) + sum(
                MODIFIED_RESIDUE_TOKENS.get(code, UNKNOWN_MODIFIED_RESIDUE_TOKENS) - 1 for code in modified
            )
        elif kind == "ligand":
            smiles = chain.get("smiles")
            tokens = (
                len(_SMILES_HEAVY_ATOM.findall(smiles))
                if smiles
                else sum(LIGAND_TOKENS.get(code, UNKNOWN_LIGAND_TOKENS) for code in chain.get("ccdCodes", []))
            )
        else:
            tokens = 0
        total += tokens * copies
    return total


def parse_buckets(buckets: str) -> list[int]:
    return sorted(int(b) for b in buckets.split(","))


def bucket_for(tokens: int, buckets: str | None = None) -> int:
    """The bucket AF3 pads ``tokens`` to (past the last bucket: the tokens themselves, as AF3 does)."""

    for bucket in parse_buckets(effective_buckets(buckets)):
        if tokens <= bucket:
            return bucket
    return tokens


def forecast_gb(bucket: int) -> float:
    a, b, c = FIT_A_B_C
    return round((a + UNROLLED_DIFFUSION_GB + b * bucket + c * bucket * bucket) * MARGIN, 1)


def available() -> host_limits.Limit | None:
    """Memory this process can still get, in bytes, and from where: the tightest of its cgroups
    (its own and their ancestors, v1 or v2), its SLURM allocation and ``/proc/meminfo``."""
    return host_limits.limits().available


def available_gb() -> float | None:
    """:func:`available` in GB (GiB, as the forecast), one decimal; None where nothing is readable."""
    found = available()
    return round(found.value / 2**30, 1) if found else None


@dataclasses.dataclass(frozen=True)
class Budget:
    """The memory a run may use, and where that number came from (for the refusal)."""

    gb: float | None  # None: nothing known, no check
    source: str


def budget(max_memory: str | None) -> Budget:
    """``--max-memory`` if given, else what this process can still get."""
    if max_memory is not None:
        return Budget(parse_max_memory(max_memory), f"--max-memory {max_memory}")
    found = available()
    return Budget(round(found.value / 2**30, 1), found.source) if found else Budget(None, "nothing readable")


def too_big(forecast: Forecast, limit: Budget) -> str:
    """The one-line refusal of a run whose forecast exceeds ``limit``, naming the limit's source and the fixes."""
    return (f"{forecast.describe()}, more than the {limit.gb:g} GB available ({limit.source}): give the run more memory "
            "(a bigger machine or job allocation, or free some), or pass --max-memory none to run anyway")


@dataclasses.dataclass(frozen=True)
class Forecast:
    name: str
    tokens: int
    bucket: int
    peak_gb: float

    def describe(self) -> str:
        """The line ``predict`` prints before it starts: time and memory, so a run that cannot finish is not begun."""

        return (f"{self.name}: {self.tokens} tokens -> bucket {self.bucket}, {forecast_time.describe(self.bucket)}, "
                f"forecast peak memory {self.peak_gb} GB")


def forecast(fold_input: dict, buckets: str | None = None, whole_ccd: bool | None = None) -> Forecast:
    """``whole_ccd``: AF3 will unpickle its whole CCD (default: when af3-cpu cannot keep its CCD index here)."""
    tokens = count_tokens(fold_input)
    bucket = bucket_for(tokens, buckets)
    if whole_ccd is None:
        whole_ccd = not cache_dirs.can_keep_ccd_index()
    extra = round(WHOLE_CCD_GB * MARGIN, 1) if whole_ccd else 0.0
    return Forecast(fold_input.get("name", "?"), tokens, bucket, round(forecast_gb(bucket) + extra, 1))


def parse_max_memory(value: str | None) -> float | None:
    """``--max-memory``: GB as a number, 'none' for no check; default (None) means what is available."""
    if value is None:
        return available_gb()
    if value.strip().lower() == "none":
        return float("inf")
    try:
        return float(value.strip().upper().removesuffix("GB").removesuffix("G"))
    except ValueError:

        raise UsageProblem(f"--max-memory {value!r} is not a size: give GB as a number (e.g. 20) or 'none'") from None
