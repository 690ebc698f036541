"""HMMER threads per search, sized to the cores this process may use (issue #25).

Why: AF3 gives every HMMER search ``min(n, 8)`` threads, where n is the
affinity mask (v3.0.2+) or the node's CPU count (v3.0.0 - v3.0.1,
``multiprocessing.cpu_count()``), never a cgroup quota or a SLURM allocation;
and its data pipeline (``_get_protein_msa_and_templates`` in
``alphafold3/data/pipeline.py``) runs a protein chain's four jackhmmer
searches (UniRef90, MGnify, small BFD, UniProt) at once in a
``ThreadPoolExecutor(max_workers=4)``, an RNA chain's three nhmmer searches
(NT-RNA, Rfam, RNAcentral) at once in another pool, then the chain's one
template hmmsearch alone.  Chains run one after the other.  So a 2-core job
starts 4 x 2 = 8 jackhmmer threads, and a 4-core SLURM job on a 64-core
node 4 x 8 = 32 on v3.0.0 - v3.0.1.

Each search gets the usable cores divided among the searches that run with
it (at least 1, at most AF3's own cap of 8: its flags' help says more gives
little).  HMMER's hits do not depend on its thread count (its workers share
out the database and the results are sorted), which
``tests/test_real_af3_data_pipeline.py`` checks on AF3's miniature databases.

Only flags the checkout's run_alphafold.py defines are passed: v3.0.0 -
v3.0.4 have ``--jackhmmer_n_cpu`` and ``--nhmmer_n_cpu``; their template
hmmsearch runs with a fixed ``--cpu 8`` (``--hmmsearch_n_cpu`` came after
v3.0.4), which only a patch of AF3 could change.

Not counted: sharded databases (``path@N``), for which AF3 runs one search
per shard at once (up to ``--jackhmmer_max_parallel_shards``); a user with
those passes the ``--*_n_cpu`` flags after ``--``, which are kept as given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# run_alphafold.py flag -> how many searches of that tool AF3 runs at once.
CONCURRENT_SEARCHES = {"jackhmmer_n_cpu": 4, "nhmmer_n_cpu": 3, "hmmsearch_n_cpu": 1}
AF3_CAP = 8  # AF3's min(n, 8)


def per_search(cores: int, concurrent: int) -> int:
    """Threads for one search among ``concurrent`` sharing ``cores``."""
    return max(1, min(cores // concurrent, AF3_CAP))


def given_flags(extra: Iterable[str]) -> set[str]:
    """Names of the flags in a run_alphafold.py argv (absl's ``--name=v``, ``--name v``, ``-name...``)."""
    names = set()
    for token in extra:
        if token.startswith("-") and token.lstrip("-"):
            names.add(token.lstrip("-").split("=", 1)[0])
    return names


def flags(cores: int, has_flag: Callable[[str], bool], extra: Iterable[str] = ()) -> list[str]:
    """``--<tool>_n_cpu=N`` for each flag this run_alphafold.py has and the user did not pass."""
    given = given_flags(extra)
    return [f"--{name}={per_search(cores, concurrent)}" for name, concurrent in CONCURRENT_SEARCHES.items()
            if has_flag(name) and name not in given]
