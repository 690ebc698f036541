"""``af3-cpu``: argument handling, one-line errors, AF3 discovery, and a full run on stand-ins."""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
from click.testing import CliRunner

from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.af3 import install as af3_install
from af3_cpu_patch.host import cache_dirs
from af3_cpu_patch.cli import main
from tests.helpers import ROOT, STANDIN, STANDIN_CHECKOUT, standin_checkout_without_output_terms

SMALL_INPUT = {
    "name": "tiny",
    "modelSeeds": [1, 2],
    "dialect": "alphafold3",
    "version": 1,
    "sequences": [{"protein": {"id": "A", "sequence": "MKTAYIAKQR", "unpairedMsa": "", "pairedMsa": "", "templates": []}}],
}


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "in.json").write_text(json.dumps(SMALL_INPUT))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "af3.bin").write_bytes(b"not read by the stand-in")
    return tmp_path


def invoke(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env or {})
    return result


def assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("af3-cpu: error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_input(workdir):
    result = invoke("predict", workdir / "nope.json", "--model-dir", workdir / "weights", "--output-dir", workdir / "out")
    assert_one_line_error(result, 2, "does not exist", "AF3 input JSON")
    assert not (workdir / "out").exists()


def test_malformed_json(workdir):
    (workdir / "bad.json").write_text('{"name": "x", ')
    result = invoke("predict", workdir / "bad.json", "--model-dir", workdir / "weights", "--output-dir", workdir / "out")
    assert_one_line_error(result, 2, "not valid JSON", "bad.json")
    assert not (workdir / "out").exists()


def test_directory_without_inputs(workdir):
    (workdir / "empty").mkdir()
    result = invoke("predict", workdir / "empty", "--model-dir", workdir / "weights")
    assert_one_line_error(result, 2, "has no .json files")


def test_missing_model_dir_and_weights(workdir):
    result = invoke("predict", workdir / "in.json", "--model-dir", workdir / "nowhere")
    assert_one_line_error(result, 2, "does not exist", "--model-dir")
    (workdir / "empty_weights").mkdir()
    result = invoke("predict", workdir / "in.json", "--model-dir", workdir / "empty_weights")
    assert_one_line_error(result, 2, "no AF3 weights", "random-weights")


def test_data_pipeline_without_databases(workdir):
    result = invoke(
        "predict", workdir / "in.json", "--model-dir", workdir / "weights", "--db-dir", workdir / "no_dbs",
        "--af3-dir", STANDIN_CHECKOUT,
    )
    assert_one_line_error(result, 2, "data pipeline", "--db-dir", "--no-run-data-pipeline")


def test_af3_dir_without_run_alphafold(workdir):
    result = invoke(
        "predict", workdir / "in.json", "--model-dir", workdir / "weights", "--no-run-data-pipeline", "--af3-dir", workdir
    )
    assert_one_line_error(result, 2, "has no run_alphafold.py", "--af3-dir")


@pytest.mark.parametrize("value", ["-1", "0"])  # AF3's own flag takes 1 or more: say so before AF3 starts
def test_bad_option_value_is_a_usage_error(workdir, value):
    result = invoke("predict", workdir / "in.json", "--num-recycles", value)
    assert result.exit_code == 2
    assert "--num-recycles" in result.output and "Traceback" not in result.output


def test_placeholder_alphafold3_is_refused(workdir, monkeypatch):
    fake = workdir / "site" / "alphafold3"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(workdir / "site"))
    monkeypatch.delenv("AF3_DIR", raising=False)
    result = invoke("predict", workdir / "in.json", "--model-dir", workdir / "weights", "--no-run-data-pipeline")
    assert_one_line_error(result, 2, "not DeepMind's AlphaFold 3", "placeholder", "pip uninstall alphafold3")


def test_no_alphafold3_at_all(workdir, monkeypatch):
    monkeypatch.setattr(af3_install, "find_package_dir", lambda: None)
    monkeypatch.delenv("AF3_DIR", raising=False)
    result = invoke("predict", workdir / "in.json", "--model-dir", workdir / "weights", "--no-run-data-pipeline")
    assert_one_line_error(result, 2, "AlphaFold 3 is not importable", "AF3_DIR")


def test_discovery_order(workdir, monkeypatch):
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.delenv("AF3_DIR", raising=False)
    # derived from the installed package: <checkout>/src/alphafold3 -> <checkout>
    assert af3_checkout.find_checkout().root == STANDIN_CHECKOUT
    # AF3_DIR beats the package; --af3-dir beats AF3_DIR
    other = workdir / "other_checkout"
    other.mkdir()
    (other / "run_alphafold.py").write_text("")
    monkeypatch.setenv("AF3_DIR", str(other))
    assert af3_checkout.find_checkout().root == other
    assert af3_checkout.find_checkout(STANDIN_CHECKOUT).root == STANDIN_CHECKOUT


def test_option_the_af3_version_lacks(workdir, monkeypatch):
    old = workdir / "old_checkout"
    shutil.copytree(STANDIN_CHECKOUT, old)
    script = old / "run_alphafold.py"
    script.write_text(script.read_text().replace('"num_recycles"', '"n_recycles_renamed"'))
    monkeypatch.syspath_prepend(str(old / "src"))
    result = invoke(
        "predict", workdir / "in.json", "--model-dir", workdir / "weights", "--no-run-data-pipeline",
        "--af3-dir", old, "--num-recycles", "1",
    )
    assert_one_line_error(result, 2, "--num-recycles is not supported by AF3 3.0.2", "--num_recycles")


# --- full runs of the stand-in run_alphafold.py, each in a fresh interpreter ---------------


_CACHE_HOME = tempfile.mkdtemp(prefix="af3-cpu-test-cache-")
atexit.register(shutil.rmtree, _CACHE_HOME, ignore_errors=True)  # each test session left one in /tmp before


def run_cli(args, env=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("AF3_CPU_PATCH", "AF3_DIR")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(STANDIN), str(ROOT)])
    full_env["XDG_CACHE_HOME"] = _CACHE_HOME  # the default compilation cache, away from the user's
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "af3_cpu_patch", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=600
    )


def test_stock_standin_cannot_start_on_cpu(workdir):
    # The blocker the CLI removes: the stand-in, like AF3 v3.0.0-v3.0.3, asks for GPU devices.
    proc = subprocess.run(
        [sys.executable, STANDIN_CHECKOUT / "run_alphafold.py", f"--json_path={workdir / 'in.json'}",
         f"--output_dir={workdir / 'stock'}", "--flash_attention_implementation=xla"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(STANDIN), "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode != 0
    assert "gpu" in proc.stderr.lower()


def test_predict_runs_stock_main_on_cpu_with_patches(workdir):
    out = workdir / "out"
    proc = run_cli([
        "predict", workdir / "in.json", "--model-dir", workdir / "weights", "--output-dir", out,
        "--no-run-data-pipeline", "--num-diffusion-samples", "2", "--af3-dir", STANDIN_CHECKOUT,
    ])
    assert proc.returncode == 0, proc.stderr
    samples = sorted(p.name for p in (out / "tiny").iterdir() if p.is_dir())
    assert samples == ["seed-1_sample-0", "seed-1_sample-1", "seed-2_sample-0", "seed-2_sample-1"]
    import numpy as np

    coords = np.loadtxt(out / "tiny" / "seed-1_sample-0" / "tiny_model.xyz")
    assert coords.shape == (40, 3) and np.isfinite(coords).all()  # NaN without the numerics patch
    assert "done" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"AF3 output written to {out}"  # flushed before the fast exit
    assert not list(workdir.glob(".out.af3-cpu-partial-*"))


def test_in_process_callers_get_system_exit(monkeypatch):
    """Only a command that ran AF3 ends the process without teardown; ``--help`` exits normally."""
    from af3_cpu_patch import cli

    monkeypatch.setattr(sys, "argv", ["af3-cpu", "--help"])
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 0  # a SystemExit at all: os._exit would have ended pytest


def test_second_run_keeps_the_first_output(workdir):
    out = workdir / "out"
    args = ["predict", workdir / "in.json", "--model-dir", workdir / "weights", "--output-dir", out,
            "--no-run-data-pipeline", "--num-diffusion-samples", "1", "--af3-dir", STANDIN_CHECKOUT, "--quiet"]
    assert run_cli(args).returncode == 0
    assert run_cli(args).returncode == 0
    jobs = sorted(p.name for p in out.iterdir())
    assert jobs[0] == "tiny" and len(jobs) == 2 and jobs[1].startswith("tiny_")


def test_nan_result_stops_the_run_and_writes_nothing(workdir):
    out = workdir / "out"
    proc = run_cli(
        ["predict", workdir / "in.json", "--model-dir", workdir / "weights", "--output-dir", out,
         "--no-run-data-pipeline", "--af3-dir", STANDIN_CHECKOUT],
        env={"STANDIN_DENOISER": "nan"},
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("af3-cpu: error: model inference: diffusion_samples.atom_positions has")
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not list(workdir.glob(".out.af3-cpu-partial-*"))


def test_debug_shows_the_traceback(workdir):
    proc = run_cli(["--debug", "predict", workdir / "nope.json"])
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("af3-cpu: error:")


def test_progress_lines_and_bit_identical_output(workdir):
    base = ["predict", workdir / "in.json", "--model-dir", workdir / "weights", "--no-run-data-pipeline",
            "--num-diffusion-samples", "2", "--af3-dir", STANDIN_CHECKOUT]
    loud = run_cli(base + ["--output-dir", workdir / "loud"])
    quiet = run_cli(base + ["--output-dir", workdir / "quiet", "--quiet"])
    assert loud.returncode == 0 and quiet.returncode == 0, loud.stderr + quiet.stderr
    # stderr is not a terminal here: plain lines, the final one per seed with all 200 steps
    finals = [line for line in loud.stderr.splitlines() if "diffusion 200/200" in line]
    assert [line.split(" | ")[0] for line in finals] == ["seed 1", "seed 2"]
    assert "diffusion" not in quiet.stderr
    for sample in ("seed-1_sample-0", "seed-2_sample-1"):
        a = (workdir / "loud" / "tiny" / sample / "tiny_model.xyz").read_bytes()
        b = (workdir / "quiet" / "tiny" / sample / "tiny_model.xyz").read_bytes()
        assert a == b


def test_progress_runs_are_compiled_once(workdir):
    """With progress on, the second run of the same input loads the model from the compilation cache.

    JAX writes no cache entry for a program with host callbacks
    (``jax.debug.callback``): the progress ticks must not be such callbacks.
    """
    cache = workdir / "cache"
    base = ["predict", workdir / "in.json", "--model-dir", workdir / "weights", "--no-run-data-pipeline",
            "--num-diffusion-samples", "2", "--af3-dir", STANDIN_CHECKOUT, "--cache-dir", cache]
    env = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # the stand-in compiles in well under JAX's 1 s
    first = run_cli(base + ["--output-dir", workdir / "first"], env=env)
    assert first.returncode == 0, first.stderr
    # --cache-dir holds this CPU's and jax's subdirectory, and in it one per run settings
    [cache_here] = cache_dirs.compilation_cache(cache).iterdir()
    entries = sorted(p.name for p in cache_here.iterdir())
    sampler = [name for name in entries if name.startswith("jit__lambda")]  # the stand-in's jitted sample()
    assert sampler, entries
    second = run_cli(base + ["--output-dir", workdir / "second"], env=env)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in cache_here.iterdir()) == entries  # same keys in a new process: loaded, not compiled
    for proc in (first, second):
        finals = [line for line in proc.stderr.splitlines() if "diffusion 200/200" in line]
        assert [line.split(" | ")[0] for line in finals] == ["seed 1", "seed 2"], proc.stderr
    for sample in ("seed-1_sample-0", "seed-2_sample-1"):
        a = (workdir / "first" / "tiny" / sample / "tiny_model.xyz").read_bytes()
        assert a == (workdir / "second" / "tiny" / sample / "tiny_model.xyz").read_bytes()


def test_json_that_af3_rejects(workdir):
    bad = dict(SMALL_INPUT, modelSeeds=[])
    (workdir / "rejected.json").write_text(json.dumps(bad))
    proc = run_cli(["predict", workdir / "rejected.json", "--model-dir", workdir / "weights", "--output-dir",
                    workdir / "out", "--no-run-data-pipeline", "--af3-dir", STANDIN_CHECKOUT])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("af3-cpu: error: AF3 rejected the input")
    assert "modelSeeds" in proc.stderr and "Traceback" not in proc.stderr
    assert not (workdir / "out").exists()


def test_af3_package_without_output_terms_is_refused_before_inference(workdir):
    checkout = standin_checkout_without_output_terms(workdir)
    (workdir / "tiny.json").write_text(json.dumps(SMALL_INPUT))
    proc = run_cli(["predict", workdir / "tiny.json", "--model-dir", workdir / "weights", "--output-dir", workdir / "out",
                    "--no-run-data-pipeline", "--af3-dir", checkout],
                   env={"PYTHONPATH": os.pathsep.join([str(checkout / "src"), str(ROOT)])})
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("af3-cpu: error: ") and "has no OUTPUT_TERMS_OF_USE.md" in last and "pip install the checkout" in last
    assert "importing AF3" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (workdir / "out").exists()


def _doctor_checkout(workdir, ccd_built: bool):
    checkout = workdir / "checkout"
    shutil.copytree(STANDIN_CHECKOUT, checkout)
    if ccd_built:
        converters = checkout / "src" / "alphafold3" / "constants" / "converters"
        converters.mkdir(parents=True)
        (converters / "chemical_component_sets.pickle").write_bytes(b"")
        (converters / "ccd.pickle").write_bytes(b"")
    return checkout


@pytest.mark.parametrize("ccd_built", [True, False])
def test_doctor(workdir, ccd_built):
    checkout = _doctor_checkout(workdir, ccd_built)
    dbs = workdir / "dbs"
    dbs.mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(checkout / "src"), str(ROOT)])}
    proc = run_cli(["doctor", "--model-dir", workdir / "weights", "--db-dir", dbs, "--af3-dir", checkout], env=env)
    out = proc.stdout
    assert "AlphaFold 3 3.0.2 + later commits [alphafold3/version.py; its common/folding_input.py matches no release]" in out
    assert "FMA" in out and "usable cores" in out and "jax " in out
    assert re.search(r"^\s*ok\s+compilation cache\s+.*runs with the progress bar are cached$", out, re.MULTILINE), out
    assert re.search(r"^\s*ok\s+output terms\s+OUTPUT_TERMS_OF_USE.md in the package$", out, re.MULTILINE), out
    if ccd_built:
        assert proc.returncode == 0, out
        assert "A CPU run can start." in out
        assert re.search(r"^\s*ok\s+CCD index\s+the first run builds it in \S+af3-cpu/ccd ", out, re.MULTILINE), out
        assert "patch denoising-step-sqrt" in out and "patch run-alphafold-cpu-device" in out
    else:
        assert proc.returncode == 1
        assert "FAIL  CCD data" in out and "build_data" in out
        assert "A CPU run cannot start" in out


def _tiny_predict(workdir):
    return ["predict", workdir / "in.json", "--model-dir", workdir / "weights", "--no-run-data-pipeline",
            "--num-diffusion-samples", "1", "--af3-dir", STANDIN_CHECKOUT]


def _settings(out):
    return json.loads((out / "tiny" / "standin_settings.json").read_text())


def test_cpu_defaults_reach_run_alphafold(workdir):
    from af3_cpu_patch import predict
    from af3_cpu_patch.host import cpu_info

    base = _tiny_predict(workdir)
    assert run_cli(base + ["--output-dir", workdir / "a"]).returncode == 0
    settings = _settings(workdir / "a")
    assert settings["buckets"] == predict.CPU_BUCKETS.split(",")
    assert settings["bfloat16"] == ("all" if cpu_info.native_bf16() else "none")
    default_cache = cache_dirs.compilation_cache(pathlib.Path(_CACHE_HOME, "af3-cpu", "jax"))  # per CPU and jax version
    used_cache = pathlib.Path(settings["cache"])  # progress on and cached, in a folder of these settings
    assert used_cache.parent == default_cache and re.fullmatch("[0-9a-f]{12}", used_cache.name)
    assert settings["cpus"] == cpu_info.usable_cores()
    assert settings["attention"] == "xla_chunked"  # the stand-in offers tokamax's list, as AF3 v3.0.2+

    cache = workdir / "cache"
    proc = run_cli(base + ["--output-dir", workdir / "b", "--buckets", "stock", "--precision", "bf16",
                           "--threads", "1", "--quiet", "--cache-dir", cache, "--attention", "xla"])
    assert proc.returncode == 0, proc.stderr
    settings = _settings(workdir / "b")
    other_cache = pathlib.Path(settings.pop("cache"))
    assert settings == {"bfloat16": "all", "buckets": ["256"], "cpus": 1, "attention": "xla"}
    assert other_cache.parent == cache / default_cache.name and other_cache.name != used_cache.name  # other settings


def test_exact_runs_stock_settings_and_only_patches_that_keep_stock_bits(workdir):
    from af3_cpu_patch.patches import CLI_PATCHES, PROGRESS_PATCHES
    from af3_cpu_patch.engine.patch import Numerics

    proc = run_cli(_tiny_predict(workdir) + ["--output-dir", workdir / "a", "--exact"])
    assert proc.returncode == 0, proc.stderr
    assert _settings(workdir / "a") | {"cache": None, "cpus": None} == {
        "bfloat16": "all", "buckets": ["256"], "attention": "xla", "cache": None, "cpus": None}  # AF3's own settings
    assert "--exact: AF3's own numerics and buckets" in proc.stdout
    installed = set(json.loads((workdir / "a" / "tiny" / "standin_patches.json").read_text()))
    changing = {p.name for p in CLI_PATCHES + PROGRESS_PATCHES if p.numerics is Numerics.CHANGES}
    assert installed and not installed & changing
    assert {p.name for p in CLI_PATCHES if p.numerics is Numerics.NEEDED} <= installed

    proc = run_cli(_tiny_predict(workdir) + ["--output-dir", workdir / "b", "--exact", "--buckets", "32"])
    assert proc.returncode == 0, proc.stderr
    assert _settings(workdir / "b")["buckets"] == ["32"]  # --buckets still counts

    proc = run_cli(_tiny_predict(workdir) + ["--output-dir", workdir / "c", "--exact", "--precision", "f32"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "af3-cpu: error: --exact keeps AF3's own numerics, which --precision f32 would change: drop --exact or the option"]
    assert not (workdir / "c").exists()


def test_attention_on_af3_without_tokamax(workdir):
    # AF3 v3.0.0-v3.0.1 have their own attention, which takes only "xla" on a CPU.
    base = _tiny_predict(workdir)
    old_af3 = {"STANDIN_NO_TOKAMAX": "1"}
    assert run_cli(base + ["--output-dir", workdir / "a"], env=old_af3).returncode == 0
    assert _settings(workdir / "a")["attention"] == "xla"
    assert _settings(workdir / "a")["bfloat16"] == "all"  # its own GLU op takes only the bf16 trunk, whatever the CPU
    proc = run_cli(base + ["--output-dir", workdir / "c", "--precision", "f32"], env=old_af3)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("af3-cpu: error: --precision f32 needs AF3 v3.0.2 or later")
    assert not (workdir / "c").exists()
    proc = run_cli(base + ["--output-dir", workdir / "b", "--attention", "xla_chunked"], env=old_af3)
    assert proc.returncode == 2
    assert "--attention xla_chunked needs AF3 v3.0.2 or later" in proc.stderr.strip().splitlines()[-1]
    assert not (workdir / "b").exists()


def test_too_many_threads(workdir):
    proc = run_cli(["predict", workdir / "in.json", "--model-dir", workdir / "weights", "--no-run-data-pipeline",
                    "--af3-dir", STANDIN_CHECKOUT, "--threads", "4096", "--output-dir", workdir / "out"])
    assert proc.returncode == 2
    assert "--threads 4096 exceeds" in proc.stderr.strip().splitlines()[-1]
    assert not (workdir / "out").exists()
