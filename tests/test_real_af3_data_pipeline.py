"""AF3's own data pipeline through ``af3-cpu`` on the test bed's real AF3 (issue #24), HMMER sized to the cores (#25).

HMMER is Debian's (``tests/data_pipeline/install.sh`` installs it; the tests
skip without it, saying so).  Debian's 3.3.2 lacks DeepMind's ``--seq_limit``
patch: AF3 v3.0.2+ probes for it (``jackhmmer -h --seq_limit 1`` in
``data/tools/subprocess_utils.py``) and runs jackhmmer without it; v3.0.0 -
v3.0.1 never pass it.  The databases are AF3's miniature ones
(``src/alphafold3/test_data/miniature_databases``, 1000 sequences each),
reached through a ``--db-dir`` of links under AF3's default file names, as a
user's download is.

Why the chains are windows of database entries and not AF3's own test
inputs: 5tgy (``run_alphafold_test.py``) and the U1A protein and RNA
(``examples/u1a_rna_hairpin.json``) find nothing in these random samples,
so their MSAs would hold only the query and could not tell a search from
none.  The protein is 32 residues of the MGnify entry MGYP001213017408 (an
ABC transporter's Walker A region, with relatives in all four protein
databases); the RNA 32 nucleotides of the RNAcentral entry URS00004E6ABB
(the 3' end of an 18S rRNA, with relatives in Rfam and RNAcentral).  Both are
read from the databases themselves.  64 tokens: bucket 64, one recycle, one
sample, random weights.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.host import cpu_info
from af3_cpu_patch.host import search_threads
from tests import real_af3
from tests.helpers import ROOT
from tests.test_real_af3_predict import mmcif_coordinates

HMMER = ("jackhmmer", "nhmmer", "hmmsearch", "hmmbuild", "hmmalign")
INSTALL = ROOT / "tests" / "data_pipeline" / "install.sh"
BUCKET = "64"
NAME = "walker_a_and_18s_rna"

# AF3's default database file names (run_alphafold.py, v3.0.1 and later) -> the miniature database.
DATABASES = {
    "bfd-first_non_consensus_sequences.fasta": "bfd-first_non_consensus_sequences__subsampled_1000.fasta",
    "mgy_clusters_2022_05.fa": "mgy_clusters__subsampled_1000.fa",
    "uniprot_all_2021_04.fa": "uniprot_all__subsampled_1000.fasta",
    "uniref90_2022_05.fa": "uniref90__subsampled_1000.fasta",
    "nt_rna_2023_02_23_clust_seq_id_90_cov_80_rep_seq.fasta": "nt_rna_2023_02_23_clust_seq_id_90_cov_80_rep_seq__subsampled_1000.fasta",
    "rfam_14_9_clust_seq_id_90_cov_80_rep_seq.fasta": "rfam_14_4_clustered_rep_seq__subsampled_1000.fasta",
    "rnacentral_active_seq_id_90_cov_80_linclust.fasta": "rnacentral_active_seq_id_90_cov_80_linclust__subsampled_1000.fasta",
    "pdb_seqres_2022_09_28.fasta": "pdb_seqres_2022_09_28__subsampled_1000.fasta",
    "mmcif_files": "pdb_mmcif",
}
# (database file, entry, first residue, length) of each chain.
PROTEIN_WINDOW = ("mgy_clusters__subsampled_1000.fa", "MGYP001213017408", 42, 32)
RNA_WINDOW = ("rnacentral_active_seq_id_90_cov_80_linclust__subsampled_1000.fasta", "URS00004E6ABB", 12, 32)

needs_hmmer = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in HMMER),
    reason=f"HMMER ({', '.join(t for t in HMMER if shutil.which(t) is None)}) not found: {INSTALL.relative_to(ROOT)} "
           "installs Debian's hmmer (needs root and apt-get)",
)


def miniature(af3):
    return af3.root / "src" / "alphafold3" / "test_data" / "miniature_databases"


def window(af3, spec) -> str:
    """``length`` residues of a database entry from ``start`` (0-based)."""
    database, entry, start, length = spec
    sequence, reading = [], False
    for line in (miniature(af3) / database).read_text().splitlines():
        if line.startswith(">"):
            if reading:
                break
            reading = line[1:].split()[0] == entry
        elif reading:
            sequence.append(line.strip())
    assert sequence, f"{entry} not in {database}"
    return "".join(sequence)[start:start + length]


def fold_input(af3) -> dict:
    """A protein and an RNA chain without MSAs or templates: AF3's data pipeline searches for both."""
    return {"name": NAME, "modelSeeds": [1], "dialect": "alphafold3", "version": 1, "sequences": [
        {"protein": {"id": "A", "sequence": window(af3, PROTEIN_WINDOW)}},
        {"rna": {"id": "B", "sequence": window(af3, RNA_WINDOW).upper().replace("T", "U")}},
    ]}


def db_dir(af3, parent):
    """AF3's miniature databases under the names run_alphafold.py looks for in a ``--db_dir``."""
    folder = parent / "databases"
    folder.mkdir()
    for name, source in DATABASES.items():
        (folder / name).symlink_to(miniature(af3) / source)
    return folder


def inputs(af3, parent):
    path = parent / f"{NAME}.json"
    path.write_text(json.dumps(fold_input(af3)))
    return path, db_dir(af3, parent)


def run(af3, command, timeout=3600, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, env=env or af3.env(), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def depth(a3m: str | None) -> int:
    return sum(line.startswith(">") for line in (a3m or "").splitlines())


def searched(data_json) -> dict:
    """Per chain id: what the data pipeline added (MSAs, templates)."""
    found = {}
    for entry in json.loads(data_json.read_text())["sequences"]:
        (kind, chain), = entry.items()
        found[chain["id"]] = {k: chain.get(k) for k in ("sequence", "unpairedMsa", "pairedMsa", "templates")}
    return found


def assert_searched_both(found: dict, fold: dict):
    protein, rna = fold["sequences"][0]["protein"]["sequence"], fold["sequences"][1]["rna"]["sequence"]
    assert found["A"]["sequence"] == protein and found["B"]["sequence"] == rna
    assert found["A"]["unpairedMsa"].splitlines()[1] == protein  # the query first, then the hits
    assert depth(found["A"]["unpairedMsa"]) > 1, "no protein hits in UniRef90/MGnify/BFD"
    assert depth(found["A"]["pairedMsa"]) > 1, "no protein hits in UniProt"
    assert depth(found["B"]["unpairedMsa"]) > 1, "no RNA hits in Rfam/RNAcentral/NT-RNA"


def assert_finite_model(cif):
    coords = mmcif_coordinates(cif)
    assert coords.shape[0] > 500 and np.isfinite(coords).all()


@pytest.fixture(scope="module")
def compilation_cache():
    """The test bed's: the batch's inference loads the program predict compiled for bucket 64 (and a warm run both)."""
    return real_af3.compilation_cache()


@pytest.fixture(scope="module")
def predicted(af3, model_dir, compilation_cache, tmp_path_factory):
    """``af3-cpu predict`` with the data pipeline on: (output dir, input dict, finished process)."""
    tmp = tmp_path_factory.mktemp("predict")
    path, dbs = inputs(af3, tmp)
    out = tmp / "out"
    proc = run(af3, af3.cli("predict", path, "--model-dir", model_dir, "--output-dir", out, "--db-dir", dbs,
                            "--af3-dir", af3.root, "--num-recycles", "1", "--num-diffusion-samples", "1",
                            "--buckets", BUCKET, "--quiet", "--cache-dir", compilation_cache))  # quiet: the batch's program too
    return out, json.loads(path.read_text()), proc


@needs_hmmer
def test_predict_searches_both_chains_and_predicts(predicted):
    out, fold, proc = predicted
    job = out / NAME
    assert_searched_both(searched(job / f"{NAME}_data.json"), fold)
    assert_finite_model(job / f"{NAME}_model.cif")
    assert "Running data pipeline for chain B" in proc.stdout + proc.stderr  # AF3's own pipeline searched the RNA


@needs_hmmer
def test_batch_data_stage_then_inference_stage(af3, model_dir, predicted, compilation_cache, tmp_path):
    path, dbs = inputs(af3, tmp_path)
    out = tmp_path / "out"
    common = ["--output-dir", out, "--model-dir", model_dir, "--db-dir", dbs, "--af3-dir", af3.root, "--shard", "0/1",
              "--num-recycles", "1", "--num-diffusion-samples", "1", "--buckets", BUCKET, "--cache-dir", compilation_cache]
    run(af3, af3.cli("batch", path, "--stage", "data", *common))
    chains = [json.loads(p.read_text()) for p in sorted((out / ".af3-cpu" / "chains").glob("*.json"))]
    assert sorted(depth(c["unpairedMsa"]) > 1 for c in chains) == [True, True]  # one file per chain, both with hits
    assert not list(out.glob(f"{NAME}/seed-*")), "the data stage ran inference"

    run(af3, af3.cli("batch", path, "--stage", "infer", *common))
    (data_json,) = (out / NAME).glob(f"seed-1/{NAME}_data.json")
    found = searched(data_json)
    fold = json.loads(path.read_text())
    assert_searched_both(found, fold)
    assert_finite_model(out / NAME / f"{NAME}_model.cif")
    # The same searches as predict's, one chain at a time: the same MSAs and templates.
    assert found == searched(predicted[0] / NAME / f"{NAME}_data.json")


# --- HMMER threads (issue #25 item 6) ---------------------------------------------------------------------------


def concurrent_searches(pipeline_source: str, function: str) -> int:
    """How many ``msa.get_msa`` searches ``function`` of AF3's pipeline submits to one thread pool, and its size."""
    tree = ast.parse(pipeline_source)
    (func,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    for node in ast.walk(func):
        if isinstance(node, ast.With) and "ThreadPoolExecutor" in ast.unparse(node.items[0].context_expr):
            submits = [c for c in ast.walk(node) if isinstance(c, ast.Call) and ast.unparse(c.func).endswith(".submit")
                       and c.args and ast.unparse(c.args[0]) == "msa.get_msa"]
            workers = [k.value.value for k in node.items[0].context_expr.keywords if k.arg == "max_workers"]
            return min([len(submits), *workers])  # no max_workers: Python's default, min(32, CPUs + 4) >= 5
    raise AssertionError(f"no thread pool in {function}")


@pytest.mark.parametrize("version", ["3.0.0", "3.0.1", "3.0.2", "3.0.3", "3.0.4", "main"])
def test_concurrent_searches_are_af3s(version):
    """The sizing divides the cores among the searches AF3 runs at once: as many as each version's pipeline runs."""
    af3 = real_af3.get(version, data=False)
    source = (af3.info.package_dir / "data" / "pipeline.py").read_text()
    assert concurrent_searches(source, "_get_protein_msa_and_templates") == search_threads.CONCURRENT_SEARCHES["jackhmmer_n_cpu"]
    assert concurrent_searches(source, "_get_rna_msa") == search_threads.CONCURRENT_SEARCHES["nhmmer_n_cpu"]
    has_flag = af3_checkout.Checkout(root=af3.root, install=af3.info).has_flag
    assert has_flag("jackhmmer_n_cpu") and has_flag("nhmmer_n_cpu")
    assert has_flag("hmmsearch_n_cpu") == (version == "main")  # v3.0.0 - v3.0.4: hmmsearch runs with --cpu 8

CPU_FLAG = re.compile(r"Launching subprocess \"\S*/(jackhmmer|nhmmer|hmmsearch) .*?--cpu (\d+)")
TOOL_FLAG = {"jackhmmer": "jackhmmer_n_cpu", "nhmmer": "nhmmer_n_cpu", "hmmsearch": "hmmsearch_n_cpu"}


def hmmer_threads(log: str) -> dict[str, set[int]]:
    """``--cpu`` of every HMMER command AF3 logged, per tool."""
    threads: dict[str, set[int]] = {}
    for tool, cpu in CPU_FLAG.findall(log):
        threads.setdefault(tool, set()).add(int(cpu))
    return threads


def stock_data_pipeline(af3, input_json, dbs, out) -> subprocess.CompletedProcess:
    """Stock ``run_alphafold.py``, data pipeline only, as its ``__main__`` runs it (AF3's own thread counts)."""
    argv = ["run_alphafold.py", f"--json_path={input_json}", f"--output_dir={out}", f"--db_dir={dbs}",
            "--run_inference=false"]
    code = (f"import sys; sys.argv = {argv!r}; sys.path.insert(0, {str(af3.root)!r}); import run_alphafold; "
            "from absl import app, flags; flags.mark_flags_as_required(['output_dir']); app.run(run_alphafold.main)")
    env = {k: v for k, v in os.environ.items() if k not in ("AF3_CPU_PATCH", "PYTHONPATH")}
    return run(af3, [af3.python, "-c", code], env={**env, "PYTHONPATH": str(af3.root / "src"), "JAX_PLATFORMS": "cpu"})


@needs_hmmer
@pytest.mark.parametrize("af3", ["3.0.4", "main"], indirect=True)
def test_sized_search_threads_find_what_af3s_defaults_find(af3, tmp_path):
    path, dbs = inputs(af3, tmp_path)
    no_weights = tmp_path / "weights"  # the data pipeline alone: AF3 loads no model
    no_weights.mkdir()
    (no_weights / "af3.bin").write_bytes(b"not read without inference")
    sized = run(af3, af3.cli("predict", path, "--model-dir", no_weights, "--output-dir", tmp_path / "sized", "--db-dir", dbs,
                             "--af3-dir", af3.root, "--quiet", "--", "--run_inference=false", "--verbosity=0"))  # absl INFO: HMMER commands
    stock = stock_data_pipeline(af3, path, dbs, tmp_path / "stock")

    cores = cpu_info.usable_cores()
    af3_default = min(len(os.sched_getaffinity(0)), 8)  # v3.0.2+: the affinity mask, capped at 8
    has_flag = af3_checkout.Checkout(root=af3.root, install=af3.info).has_flag
    ours, theirs = {}, {}
    for tool, flag in TOOL_FLAG.items():
        configurable = has_flag(flag)  # v3.0.0 - v3.0.4 run hmmsearch with a fixed --cpu 8
        ours[tool] = search_threads.per_search(cores, search_threads.CONCURRENT_SEARCHES[flag]) if configurable else 8
        theirs[tool] = af3_default if configurable else 8
    logged = {"sized": hmmer_threads(sized.stderr), "stock": hmmer_threads(stock.stderr)}
    for run_name, expected in (("sized", ours), ("stock", theirs)):
        assert logged[run_name].keys() >= {"jackhmmer", "nhmmer"}, f"AF3 logged no HMMER command lines ({run_name})"
        assert logged[run_name] == {tool: {expected[tool]} for tool in logged[run_name]}, run_name

    found = searched(tmp_path / "sized" / NAME / f"{NAME}_data.json")
    assert_searched_both(found, json.loads(path.read_text()))
    assert found == searched(tmp_path / "stock" / NAME / f"{NAME}_data.json")
    if ours["jackhmmer"] == af3_default:
        pytest.skip(f"on {cores} core(s) AF3's default and the sized count are both {af3_default}: the MSAs "
                    "matched, but not across different thread counts")
