"""Cores and memory as the process really has them: nested cgroups (v1, v2, containers), SLURM/PBS, affinity.

Fixture trees stand for ``/proc`` and ``/sys/fs/cgroup``; their mountinfo is
written as a real host's (mount points under /sys/fs/cgroup, which
``limits`` moves under the injected cgroup root).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from af3_cpu_patch import doctor
from af3_cpu_patch.host import memory_forecast
from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import cgroups
from af3_cpu_patch.host.limits import UNLIMITED_BYTES, limits
from tests.helpers import ROOT, STANDIN, STANDIN_CHECKOUT

GIB, MIB = 2**30, 2**20
V1_UNLIMITED = "9223372036854771712"  # what cgroup v1 reads as "no limit"
V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
"""
V2_MOUNTS = "31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"


class Host:
    """A fixture /proc and /sys/fs/cgroup under tmp_path."""

    def __init__(self, tmp_path: pathlib.Path, cgroup: str, mountinfo: str | None, mem_total_gib=64, mem_available_gib=60):
        self.proc, self.cgroup_root = tmp_path / "proc", tmp_path / "sys" / "fs" / "cgroup"
        (self.proc / "self").mkdir(parents=True)
        self.cgroup_root.mkdir(parents=True)
        (self.proc / "self" / "cgroup").write_text(cgroup)
        if mountinfo is not None:
            (self.proc / "self" / "mountinfo").write_text(mountinfo)
        (self.proc / "meminfo").write_text(
            f"MemTotal:       {mem_total_gib * 2**20} kB\nMemFree:        1024 kB\nMemAvailable:   {mem_available_gib * 2**20} kB\n")

    def files(self, directory: str, **files) -> pathlib.Path:
        """Write cgroup files (``memory_max="..."`` -> ``memory.max``) into ``directory`` under the cgroup root."""
        path = self.cgroup_root / directory
        path.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (path / name.replace("_", ".", 1)).write_text(f"{text}\n")
        return path

    def limits(self, env=None, affinity=range(8)):
        return limits(env=env or {}, proc_root=self.proc, cgroup_root=self.cgroup_root, affinity=set(affinity))


def v1_slurm_host(tmp_path, **options) -> Host:
    """A SLURM-style v1 host: the process in memory and cpu,cpuacct cgroups three levels deep."""
    job = "/slurm/uid_1000/job_42/step_0"
    return Host(tmp_path, f"12:name=systemd:/user.slice\n4:memory:{job}\n3:cpu,cpuacct:{job}\n", V1_MOUNTS, **options)


def test_v1_limit_two_levels_up(tmp_path):
    host = v1_slurm_host(tmp_path)
    for level in ("memory", "memory/slurm", "memory/slurm/uid_1000/job_42", "memory/slurm/uid_1000/job_42/step_0"):
        host.files(level, memory_limit_in_bytes=V1_UNLIMITED, memory_usage_in_bytes=5 * GIB)
    limited = host.files("memory/slurm/uid_1000", memory_limit_in_bytes=4 * GIB, memory_usage_in_bytes=GIB,
                         memory_stat=f"cache 1\ninactive_file 1\ntotal_inactive_file {256 * MIB}\n")
    found = host.limits()
    assert found.memory.value == 4 * GIB
    assert found.memory.source == f"cgroup v1 memory.limit_in_bytes at {limited}"
    assert found.available.value == 4 * GIB - (GIB - 256 * MIB)  # usage less the subtree's reclaimable page cache
    assert found.available.source.startswith(f"cgroup v1 memory.limit_in_bytes at {limited}")
    assert found.cores.source == "affinity mask (8 CPUs)"


def test_v1_the_tightest_level_wins_and_cpu_quota_is_read(tmp_path):
    host = v1_slurm_host(tmp_path)
    host.files("memory/slurm/uid_1000", memory_limit_in_bytes=4 * GIB)
    leaf = host.files("memory/slurm/uid_1000/job_42/step_0", memory_limit_in_bytes=3 * GIB, memory_usage_in_bytes=GIB)
    job = host.files("cpu,cpuacct/slurm/uid_1000/job_42", cpu_cfs_quota_us=250000, cpu_cfs_period_us=100000)
    host.files("cpu,cpuacct", cpu_cfs_quota_us=-1, cpu_cfs_period_us=100000)
    found = host.limits()
    assert (found.memory.value, found.memory.source) == (3 * GIB, f"cgroup v1 memory.limit_in_bytes at {leaf}")
    assert found.available.value == 2 * GIB
    assert found.cores.value == 2  # 2.5 CPUs of quota: whole cores
    assert found.cores.source == f"cgroup v1 cpu.cfs_quota_us at {job} (250000/100000)"
    assert host.limits(affinity=[0]).cores.source == "affinity mask (1 CPUs)"  # a narrower mask beats the quota


def test_v2_nested(tmp_path):
    host = Host(tmp_path, "0::/system.slice/af3.scope\n", V2_MOUNTS)
    host.files("", memory_max="max", cpu_max="max 100000")
    slice_dir = host.files("system.slice", memory_max=8 * GIB, memory_current=3 * GIB, memory_stat=f"anon 5\ninactive_file {GIB}\n")
    scope = host.files("system.slice/af3.scope", memory_max="max", memory_current=GIB, cpu_max="150000 100000")
    found = host.limits()
    assert (found.memory.value, found.memory.source) == (8 * GIB, f"cgroup v2 memory.max at {slice_dir}")
    assert found.available.value == 6 * GIB
    assert (found.cores.value, found.cores.source) == (1, f"cgroup v2 cpu.max at {scope} (150000/100000)")


def test_unlimited_cgroups_leave_the_system_numbers(tmp_path):
    host = Host(tmp_path, "0::/user.slice/session.scope\n", V2_MOUNTS, mem_total_gib=32, mem_available_gib=20)
    for level in ("", "user.slice", "user.slice/session.scope"):
        host.files(level, memory_max="max", memory_current=GIB, cpu_max="max 100000")
    found = host.limits(affinity=range(6))
    assert (found.memory.value, found.memory.source) == (32 * GIB, "/proc/meminfo MemTotal")
    assert (found.available.value, found.available.source) == (20 * GIB, "/proc/meminfo MemAvailable")
    assert (found.cores.value, found.cores.source) == (6, "affinity mask (6 CPUs)")
    assert int(V1_UNLIMITED) >= UNLIMITED_BYTES


def test_container_mounts_its_own_cgroup_as_the_root(tmp_path):
    """Docker without a cgroup namespace: /proc/self/cgroup names the host's path, the mount shows that cgroup at its point."""
    mounts = ("50 40 0:32 /docker/abc123 /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
              "51 40 0:29 /docker/abc123 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n")
    host = Host(tmp_path, "4:memory:/docker/abc123\n3:cpu,cpuacct:/docker/abc123\n", mounts)
    own = host.files("memory", memory_limit_in_bytes=6 * GIB, memory_usage_in_bytes=GIB)
    cpu = host.files("cpu,cpuacct", cpu_cfs_quota_us=400000, cpu_cfs_period_us=100000)
    assert not (own / "docker").exists()
    found = host.limits()
    assert found.memory.source == f"cgroup v1 memory.limit_in_bytes at {own}" and found.memory.value == 6 * GIB
    assert found.cores.value == 4 and str(cpu) in found.cores.source


def test_v2_container_below_a_nested_mount_root(tmp_path):
    mounts = "60 50 0:28 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    host = Host(tmp_path, "0::/kubepods/pod1/ctr\n", mounts)
    pod = host.files("", memory_max=2 * GIB, memory_current=GIB // 2)
    host.files("ctr", memory_max="max", memory_current=GIB // 2)
    found = host.limits()
    assert (found.memory.value, found.memory.source) == (2 * GIB, f"cgroup v2 memory.max at {pod}")
    assert [c.dirs for c in cgroups.chains("memory", host.proc, host.cgroup_root)] == [(pod / "ctr", pod)]


def test_mountinfo_decides_where_a_hierarchy_is(tmp_path):
    """A memory hierarchy mounted elsewhere (and a path with a space, escaped in mountinfo) is found there."""
    elsewhere = tmp_path / "cg roots" / "mem"
    escaped = str(elsewhere).replace(" ", "\\040")
    host = Host(tmp_path, "4:memory:/batch/job 7\n", f"70 20 0:40 / {escaped} rw - cgroup cgroup rw,memory\n")
    (elsewhere / "batch" / "job 7").mkdir(parents=True)
    (elsewhere / "batch" / "memory.limit_in_bytes").write_text(f"{5 * GIB}\n")
    host.files("memory/batch", memory_limit_in_bytes=GIB)  # the usual place, not where this host mounts it
    assert host.limits().memory.source == f"cgroup v1 memory.limit_in_bytes at {elsewhere / 'batch'}"


def test_without_mountinfo_the_usual_layout_is_assumed(tmp_path):
    host = v1_slurm_host(tmp_path, mem_total_gib=16)
    (host.proc / "self" / "mountinfo").unlink()
    job = host.files("cpu,cpuacct/slurm/uid_1000/job_42", cpu_cfs_quota_us=300000, cpu_cfs_period_us=100000)
    found = host.limits()
    assert found.cores.value == 3 and str(job) in found.cores.source


@pytest.mark.parametrize("unified", ["", "unified"])  # v2 alone, or v2 beside v1 (hybrid)
def test_without_mountinfo_v2_is_where_cgroup_controllers_is(tmp_path, unified):
    host = Host(tmp_path, "0::/user.slice/af3.scope\n", None)
    host.files(unified, cgroup_controllers="cpu memory")
    scope = host.files(f"{unified}/user.slice/af3.scope".lstrip("/"), memory_max=5 * GIB)
    if unified:
        host.files("user.slice/af3.scope", memory_max=GIB)  # not a v2 hierarchy: no cgroup.controllers above it
    assert host.limits().memory.source == f"cgroup v2 memory.max at {scope}"


@pytest.mark.parametrize("env, value, source", [
    ({"SLURM_MEM_PER_NODE": "2048"}, 2 * GIB, "SLURM_MEM_PER_NODE=2048"),
    ({"SLURM_MEM_PER_NODE": "3G"}, 3 * GIB, "SLURM_MEM_PER_NODE=3G"),
    ({"SLURM_MEM_PER_CPU": "1024", "SLURM_CPUS_ON_NODE": "3"}, 3 * GIB, "SLURM_MEM_PER_CPU=1024 x SLURM_CPUS_ON_NODE=3"),
    ({"SLURM_MEM_PER_CPU": "512M"}, 4 * GIB, "SLURM_MEM_PER_CPU=512M x affinity mask (8 CPUs)"),
    ({"SLURM_MEM_PER_NODE": "0"}, 64 * GIB, "/proc/meminfo MemTotal"),  # 0: the whole node
])
def test_slurm_memory(tmp_path, env, value, source):
    host = v1_slurm_host(tmp_path)
    found = host.limits(env)
    assert (found.memory.value, found.memory.source) == (value, source)
    assert found.available.value == min(value, 60 * GIB)


def test_a_cgroup_tighter_than_slurm_wins(tmp_path):
    host = v1_slurm_host(tmp_path)
    job = host.files("memory/slurm/uid_1000/job_42", memory_limit_in_bytes=GIB, memory_usage_in_bytes=0)
    assert host.limits({"SLURM_MEM_PER_NODE": "2048"}).memory.source == f"cgroup v1 memory.limit_in_bytes at {job}"
    host.files("memory/slurm/uid_1000/job_42", memory_limit_in_bytes=3 * GIB)
    assert host.limits({"SLURM_MEM_PER_NODE": "2048"}).memory.source == "SLURM_MEM_PER_NODE=2048"


@pytest.mark.parametrize("env, cores, source", [
    ({"SLURM_CPUS_PER_TASK": "3", "SLURM_CPUS_ON_NODE": "4"}, 3, "SLURM_CPUS_PER_TASK=3"),
    ({"SLURM_CPUS_ON_NODE": "5"}, 5, "SLURM_CPUS_ON_NODE=5"),
    ({"PBS_JOBID": "1.pbs", "NCPUS": "2"}, 2, "NCPUS=2"),
    ({"PBS_JOBID": "1.torque", "PBS_NUM_PPN": "6"}, 6, "PBS_NUM_PPN=6"),
    ({"PBS_NCPUS": "7"}, 7, "PBS_NCPUS=7"),
    ({"NCPUS": "2"}, 8, "affinity mask (8 CPUs)"),  # NCPUS outside a PBS job is someone else's variable
    ({"SLURM_CPUS_PER_TASK": "16"}, 8, "affinity mask (8 CPUs)"),  # the mask is narrower than the allocation
])
def test_scheduler_cores(tmp_path, env, cores, source):
    found = v1_slurm_host(tmp_path).limits(env)
    assert (found.cores.value, found.cores.source) == (cores, source)


@pytest.mark.parametrize("env, name", [({"SLURM_MEM_PER_NODE": "lots"}, "SLURM_MEM_PER_NODE"),
                                        ({"SLURM_CPUS_PER_TASK": "two"}, "SLURM_CPUS_PER_TASK")])
def test_malformed_scheduler_variables_are_named(tmp_path, env, name):
    with pytest.raises(UsageProblem, match=rf"^{name}=.* unset it$"):
        v1_slurm_host(tmp_path).limits(env)


def test_this_host_finds_its_own_cgroups():
    """On the machine running the tests: the chains start at the cgroup /proc/self/cgroup names, and limits stay within the machine."""
    own = {}
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if "memory" in names.split(","):
            own["memory"] = path
    chains = [c for c in cgroups.chains("memory") if c.version == 1]
    if "memory" in own and chains and chains[0].dirs[-1] != chains[0].dirs[0]:
        assert str(chains[0].dirs[0]).endswith(own["memory"].rstrip("/"))
    found = limits()
    total = int(next(line.split()[1] for line in pathlib.Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")))
    assert 0 < found.memory.value <= total * 1024 and 0 <= found.available.value <= found.memory.value
    assert 1 <= found.cores.value <= len(os.sched_getaffinity(0))


def test_doctor_says_where_each_limit_comes_from(monkeypatch):
    for name in [n for n in os.environ if n.startswith(("SLURM_", "PBS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "1024")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    lines = {c.what: (c.level, c.detail) for c in doctor.limit_checks()}
    assert lines["cores"] == ("ok", "1 usable cores (SLURM_CPUS_PER_TASK=1)")
    assert lines["memory"][0] == "ok" and lines["memory"][1].startswith("1.0 GiB available now (SLURM_MEM_PER_NODE=1024); limit 1.0 GiB")
    assert memory_forecast.budget(None) == memory_forecast.Budget(1.0, "SLURM_MEM_PER_NODE=1024")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "1O24")
    [check] = doctor.limit_checks()
    assert check.level == "FAIL" and "SLURM_MEM_PER_NODE='1O24' is not a memory size" in check.detail


def test_predict_in_a_slurm_job_is_refused_naming_the_allocation(tmp_path):
    """``af3-cpu predict`` with a 2 GB SLURM allocation: refused before AF3 is looked for, in one line naming the variable."""
    (tmp_path / "in.json").write_text(json.dumps({
        "name": "tiny", "modelSeeds": [1], "dialect": "alphafold3", "version": 1,
        "sequences": [{"protein": {"id": "A", "sequence": "MKTAYIAKQR", "unpairedMsa": "", "pairedMsa": "", "templates": []}}]}))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "af3.bin").write_bytes(b"not read")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PBS_", "AF3_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(STANDIN), str(ROOT)]), XDG_CACHE_HOME=str(tmp_path / "cache"),
               SLURM_JOB_ID="42", SLURM_MEM_PER_NODE="2048")
    proc = subprocess.run(
        [sys.executable, "-m", "af3_cpu_patch", "predict", str(tmp_path / "in.json"), "--model-dir", str(tmp_path / "weights"),
         "--output-dir", str(tmp_path / "out"), "--no-run-data-pipeline", "--af3-dir", str(STANDIN_CHECKOUT)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("af3-cpu: error: tiny: 10 tokens -> bucket 16, ") and "forecast peak memory " in lines[0]
    assert "more than the 2 GB available (SLURM_MEM_PER_NODE=2048)" in lines[0] and "--max-memory none" in lines[0]
    assert proc.stdout == ""  # nothing said, so nothing loaded: the refusal comes before AF3 is found or imported
    assert not (tmp_path / "out").exists()
