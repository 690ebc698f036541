"""Time forecasts and the --time/--mem a batch asks SLURM/PBS for.

The shipped costs are checked against the benchmark files they come from, and
the forecast against the full runs measured on the same machines; the rest is
how forecasts become scheduler requests (margin, user values win, array max).
"""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest
from click.testing import CliRunner

from af3_cpu_patch.host import memory_forecast
from af3_cpu_patch.batch import engines, plan, sizing, worker
from af3_cpu_patch.cli import main
from af3_cpu_patch.host import forecast_time as ft
from tests.helpers import ROOT, STANDIN_CHECKOUT
from tests.test_batch import batch_dir, fold_input  # noqa: F401 - fixture

MEASURED = ROOT / "benchmarks" / "measured"


def _json(name: str) -> dict:
    return json.loads((MEASURED / name).read_text())


def _breakdowns(suffix: str) -> dict[int, dict]:
    """bucket -> breakdown.py result, the files named ``breakdown-<residues>[-bucket<B>]-v3.0.4-<suffix>`` only."""
    runs = [json.loads(path.read_text()) for path in MEASURED.glob(f"breakdown-*-v3.0.4-{suffix}")
            if re.fullmatch(rf"breakdown-\d+(-bucket\d+|-trunk)?-v3\.0\.4-{re.escape(suffix)}", path.name)]
    found: dict[int, dict] = {}
    for data in sorted(runs, key=lambda d: d["residues"] == d["bucket"]):  # a bucket's own residue count wins
        found.setdefault(data["bucket"], {}).update({k: v for k, v in data.items() if v is not None})
    return found


@pytest.mark.parametrize("cpu,suffix", [(ft.AVX512_BF16, "amd-epyc-avx512bf16-2core.json"), (ft.X86_64, "amd-epyc-2core.json")])
def test_shipped_costs_are_the_measured_ones(cpu, suffix):
    measured = _breakdowns(suffix)
    assert sorted(measured) == list(cpu.buckets)
    for i, bucket in enumerate(cpu.buckets):
        assert cpu.trunk_pass_s[i] == measured[bucket]["per_trunk_pass_s"], bucket
        if i < len(cpu.diffusion_step_s):
            assert cpu.diffusion_step_s[i] == measured[bucket]["per_diffusion_step_s"], bucket
        if i < len(cpu.rest_s):  # a running max of the measured rest, negatives (noise) as 0
            solved = [max(0.0, measured[b]["rest_s"]) for b in cpu.buckets[:i + 1]]
            assert cpu.rest_s[i] == max(solved), bucket


def test_todays_defaults_scale_the_bf16_class():
    variants = _json("variants-64-v3.0.4-amd-epyc-avx512bf16-2core.json")["sessions"][-1]["variants"]
    (step,) = [v["per_diffusion_step_s"] for name, v in variants.items() if name.startswith("today's defaults")]
    trunk = _json("variants-64-msa-rows-v3.0.4-amd-epyc-avx512bf16-2core.json")["variants"]["msa-rows"]["per_trunk_pass_s"]
    at_64 = ft.AVX512_BF16.buckets.index(64)
    assert ft.AVX512_BF16.trunk_scale == pytest.approx(trunk / ft.AVX512_BF16.trunk_pass_s[at_64], abs=1e-3)
    assert ft.AVX512_BF16.diffusion_scale == pytest.approx(step / ft.AVX512_BF16.diffusion_step_s[at_64], abs=1e-3)


def test_compilation_and_process_start_are_the_measured_ones():
    rows = [row["af3_cpu"] | {"residues": row["residues"]} for path in MEASURED.glob("full-*.json")
            for row in json.loads(path.read_text()).get("rows", []) if row.get("af3_cpu", {}).get("compile_s")]
    n, x, y = len(rows), [r["residues"] for r in rows], [r["compile_s"] for r in rows]
    slope = (n * sum(a * b for a, b in zip(x, y)) - sum(x) * sum(y)) / (n * sum(a * a for a in x) - sum(x) ** 2)
    assert (round((sum(y) - slope * sum(x)) / n, 1), round(slope, 3)) == ft.COMPILE_S
    exits = _json("full-40-64-params-exit-v3.0.4-amd-epyc-avx512bf16-2core.json")["rows"]
    assert ft.PROCESS_S == max(round(r["af3_cpu"]["wall_s"] - r["af3_cpu"]["inference_s"] - r["af3_cpu"]["compile_s"], 1) for r in exits)


@pytest.mark.parametrize("cpu,name,low,high", [
    (ft.AVX512_BF16, "full-40-64-params-exit-v3.0.4-amd-epyc-avx512bf16-2core.json", 0.95, 1.05),
    (ft.X86_64, "full-256-row-blocks-v3.0.4-amd-epyc-2core.json", 1.0, 1.1),
])
def test_forecast_matches_measured_full_runs(cpu, name, low, high):
    for row in _json(name)["rows"]:
        forecast = ft.run_seconds([row["residues"]], cores=2, cpu=cpu)
        assert low <= forecast / row["af3_cpu"]["wall_s"] <= high, (row["input"], forecast, row["af3_cpu"]["wall_s"])


@pytest.mark.parametrize("cpu", [ft.AVX512_BF16, ft.X86_64])
def test_forecast_grows_with_the_bucket(cpu):
    buckets = [16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 384, 512, 768, 1024, 2048]
    for settings in ({}, {"num_recycles": 2, "num_diffusion_samples": 1}, {"cores": 32}):
        times = [ft.run_seconds([b], cpu=cpu, **settings) for b in buckets]
        assert all(a < b for a, b in zip(times[2:], times[3:])), times  # strictly past the first measured bucket
        assert times == sorted(times), times
    assert ft.run_seconds([2048], cpu=cpu) > 8 * ft.run_seconds([1024], cpu=cpu) * 0.9  # the trunk's cubic growth


def test_work_and_cores_move_the_forecast():
    one = ft.inference_seconds(64, cores=1, cpu=ft.X86_64)
    assert one == pytest.approx(2 * ft.inference_seconds(64, cores=2, cpu=ft.X86_64))
    assert ft.inference_seconds(64, cores=32, cpu=ft.X86_64) < ft.inference_seconds(64, cores=8, cpu=ft.X86_64) < one
    assert ft.inference_seconds(64, num_recycles=3, cpu=ft.X86_64) < ft.inference_seconds(64, cpu=ft.X86_64)
    assert ft.inference_seconds(64, num_diffusion_samples=10, cpu=ft.X86_64) > ft.inference_seconds(64, cpu=ft.X86_64)
    # A process compiles each bucket once: two tasks of one bucket cost one compilation, of two buckets two.
    same = ft.run_seconds([64, 64], cpu=ft.X86_64)
    assert same == pytest.approx(ft.PROCESS_S + ft.compile_seconds(64) + 2 * ft.inference_seconds(64, cpu=ft.X86_64))
    assert ft.run_seconds([64, 80], cpu=ft.X86_64) > same + ft.compile_seconds(80) - 1e-9


def test_request_margin_and_walltime_format():
    assert ft.request_seconds(100) == ft.MIN_REQUEST_S
    assert ft.request_seconds(3600) == math.ceil(3600 * ft.TIME_MARGIN / 60) * 60 == 5400
    assert ft.request_seconds(3601) == 5460  # whole minutes, rounded up
    assert ft.walltime(5400) == "01:30:00" and ft.walltime(2 * 86400 + 60) == "2-00:01:00"
    assert ft.walltime(2 * 86400 + 60, days=False) == "48:01:00"  # PBS has no days
    assert engines.walltime_seconds(ft.walltime(5460)) == 5460


def test_predict_line_has_time_and_memory():
    fold = {"name": "p", "sequences": [{"protein": {"id": "A", "sequence": "M" * 60}}]}
    line = memory_forecast.forecast(fold).describe()
    assert re.fullmatch(r"p: 60 tokens -> bucket 64, forecast time ~\d+ (s|min|h) on \d+ core\(s\) \(shipped "
                        r"(avx512-bf16|x86-64) costs, AF3's default recycles and samples\), forecast peak memory [\d.]+ GB", line), line


# --- what schedulers are asked for -----------------------------------------------------------------

def _plan(batch_dir):  # noqa: F811 - fixture
    return plan.make_plan(plan.input_files([batch_dir / "inputs"]), None, False)


def _settings(batch_dir, **kwargs):  # noqa: F811 - fixture
    return worker.BatchOptions(output_dir=batch_dir / "out", model_dir=batch_dir / "weights", **kwargs)


def test_sizing_from_forecasts_and_user_values_win(batch_dir):  # noqa: F811 - fixture
    made, settings = _plan(batch_dir), _settings(batch_dir)
    sized = sizing.size(engines.ClusterOptions(jobs=2, cores=4), made, settings, shards=2, cpu=ft.X86_64)
    longest = max(sizing.shard_seconds(made.shard(i, 2), settings, 4, ft.X86_64) for i in range(2))
    assert sized.options.walltime == ft.walltime(ft.request_seconds(longest))
    assert sized.options.memory == f"{sizing.job_memory_gb(max(t.forecast_gb for t in made.tasks))}GB"
    assert engines.parse_memory_gb(sized.options.memory) >= max(t.forecast_gb for t in made.tasks) * sizing.MEMORY_HEADROOM
    assert any("--time" in n for n in sized.notes) and any("--mem" in n for n in sized.notes)

    given = sizing.size(engines.ClusterOptions(jobs=2, cores=4, memory="100GB", walltime="3-00:00:00"), made, settings, 2)
    assert (given.options.memory, given.options.walltime, given.notes) == ("100GB", "3-00:00:00", [])

    # One shard holds the whole batch: its time is longer than a shard of two.
    whole = sizing.size(engines.ClusterOptions(cores=4), made, settings, shards=1, cpu=ft.X86_64)
    assert engines.walltime_seconds(whole.options.walltime) > engines.walltime_seconds(sized.options.walltime) or \
        engines.walltime_seconds(sized.options.walltime) == ft.MIN_REQUEST_S
    # Workers retire before the walltime: their lifetime still holds the forecast share.
    workers = sizing.size(engines.ClusterOptions(cores=4), made, settings, shards=1, for_workers=True, cpu=ft.X86_64)
    lifetime, _ = engines.worker_lifetime(workers.options.walltime)
    assert int(lifetime[:-1]) >= engines.walltime_seconds(whole.options.walltime)


def test_sizing_counts_only_what_is_left_and_falls_back_for_the_data_pipeline(batch_dir):  # noqa: F811 - fixture
    from af3_cpu_patch.batch import layout

    (batch_dir / "inputs" / "big.json").write_text(json.dumps(fold_input("big", ["M" * 500], (1, 2, 3))))
    made, settings = _plan(batch_dir), _settings(batch_dir)
    before = sizing.size(engines.ClusterOptions(cores=2), made, settings, 1, cpu=ft.X86_64).options
    for task in made.tasks:
        if task.job == "big":  # as if done: a done marker made from the same input
            layout.write_json_atomic(layout.task_dir(settings.output_dir, task) / layout.DONE, {"input_digest": task.digest})
    after = sizing.size(engines.ClusterOptions(cores=2), made, settings, 1, cpu=ft.X86_64).options
    assert engines.walltime_seconds(after.walltime) < engines.walltime_seconds(before.walltime)
    assert engines.parse_memory_gb(after.memory) < engines.parse_memory_gb(before.memory)

    (batch_dir / "inputs" / "nomsa.json").write_text(json.dumps(fold_input("nomsa", ["MKT"], msa=False)))
    with_data = plan.make_plan(plan.input_files([batch_dir / "inputs"]), None, True)
    sized = sizing.size(engines.ClusterOptions(cores=2), with_data, settings, 1)
    assert sized.options.walltime == sizing.FALLBACK_WALLTIME and "data pipeline" in " ".join(sized.notes)


def _print_sbatch(batch_dir, *args):  # noqa: F811 - fixture
    result = CliRunner().invoke(main, ["batch", str(batch_dir / "inputs"), "--output-dir", str(batch_dir / "out"),
                                       "--model-dir", str(batch_dir / "weights"), "--af3-dir", str(STANDIN_CHECKOUT),
                                       "--no-run-data-pipeline", "--print-sbatch", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_sbatch_script_asks_for_the_forecasts_unless_given(batch_dir, tmp_path):  # noqa: F811 - fixture
    script = _print_sbatch(batch_dir, "--jobs", "2", "--cores", "4")
    made, settings = _plan(batch_dir), _settings(batch_dir)
    expected = sizing.size(engines.ClusterOptions(jobs=2, cores=4), made, settings, 2)
    assert f"#SBATCH --time={expected.options.walltime}\n" in script
    mem = sizing.job_memory_gb(max(t.forecast_gb for t in made.tasks))
    assert f"#SBATCH --mem={mem}G\n" in script
    assert f"--mem={math.ceil(mem * sizing.RETRY_MEMORY_FACTOR)}G " in script  # the once-more submission after a kill
    assert re.search(r"^# --time .* x 1\.5", script, re.M)

    given = _print_sbatch(batch_dir, "--jobs", "2", "--memory", "48GB", "--walltime", "7:00:00")
    assert "#SBATCH --time=7:00:00\n" in given and "#SBATCH --mem=48G\n" in given and "--mem=72G " in given
    assert "# --time" not in given and "# --mem" not in given
    path = tmp_path / "job.sh"
    path.write_text(given)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_cluster_without_cores_is_one_line_before_anything_starts(batch_dir):  # noqa: F811 - fixture
    result = CliRunner().invoke(main, ["batch", str(batch_dir / "inputs"), "--output-dir", str(batch_dir / "out"),
                                       "--model-dir", str(batch_dir / "weights"), "--cluster", "slurm"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("af3-cpu: error: --cluster needs --cores"), result.output
    assert not (batch_dir / "out").exists()
