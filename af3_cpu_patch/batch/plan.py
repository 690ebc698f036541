"""Turn AF3 input files into batch tasks, without importing AF3.

A task is one (input, seed): AF3 runs seeds of an input independently, so
seeds are the unit that spreads over workers.  With the data pipeline on,
every distinct protein/RNA chain that lacks MSAs gets one data task, shared
by every input that contains it (AF3 searches each chain on its own, so
the result does not depend on the other chains).  Tasks are ordered by token
bucket so a worker reuses its compiled model for consecutive tasks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re

from af3_cpu_patch import predict
from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import memory_forecast

DATA_FIELDS = {"protein": ("unpairedMsa", "pairedMsa", "templates"), "rna": ("unpairedMsa",)}


@dataclasses.dataclass(frozen=True)
class ChainData:
    """One distinct chain whose MSAs (and templates) the data pipeline computes."""

    kind: str
    sequence: str

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.kind}:{self.sequence}".encode()).hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class Task:
    """One AF3 input and one seed."""

    job: str  # the input's sanitised name: its output folder
    seed: int
    source: str  # the input JSON file
    index: int  # position of this input in its file (AlphaFold Server files hold several)
    tokens: int
    bucket: int
    forecast_gb: float
    chains: tuple[ChainData, ...] = ()  # chains waiting for the data pipeline
    digest: str = ""  # of this task's input: a result made from another input is not "done"

    @property
    def key(self) -> str:
        return f"{self.job}/seed-{self.seed}"


@dataclasses.dataclass
class Plan:
    tasks: list[Task]
    chains: list[ChainData]
    rejected: dict[str, str]  # input file -> why it cannot be planned

    def shard(self, index: int, count: int) -> list[Task]:
        """Every ``count``-th task from ``index``: shards cover the task list exactly once."""
        return self.tasks[index::count]


def sanitised_name(name: str) -> str:
    """AF3's output folder name for an input name (letters, digits, ``_-.``; spaces as ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "", name.replace(" ", "_"))


def input_files(paths: list[pathlib.Path]) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for path in paths:
        if not path.exists():
            raise UsageProblem(f"input {path} does not exist: give AF3 input JSON files or folders of them")
        files += predict.json_files(path)
    if not files:
        raise UsageProblem(f"no .json files in {', '.join(map(str, paths))}: give AF3 input JSON files or folders of them")
    return files


def _load(file: pathlib.Path) -> list[dict]:
    data = json.loads(file.read_text())
    if isinstance(data, dict):
        if data.get("dialect") != "alphafold3":
            raise ValueError("not an AF3 input (its 'dialect' is not 'alphafold3')")
        return [data]
    raise ValueError("AlphaFold Server format: convert it with AF3 (run_alphafold.py --run_inference=false) first")


def needs_data(kind: str, chain: dict) -> bool:
    """A chain the data pipeline would search: AF3 leaves chains whose MSA fields are set alone."""
    return kind in DATA_FIELDS and chain.get("unpairedMsa") is None and chain.get("unpairedMsaPath") is None


def make_plan(files: list[pathlib.Path], buckets: str | None, run_data_pipeline: bool) -> Plan:
    tasks, rejected, chains, jobs = [], {}, {}, {}
    for file in files:
        try:
            inputs = _load(file)
            for index, fold_input in enumerate(inputs):
                name = fold_input.get("name")
                seeds = fold_input.get("modelSeeds")
                if not name or not seeds or not all(isinstance(s, int) for s in seeds):
                    raise ValueError("an AF3 input needs a 'name' and integer 'modelSeeds'")
                job = sanitised_name(name)
                if job.lower() in jobs:
                    raise ValueError(f"its name {name!r} gives the output folder {job!r}, as {jobs[job.lower()]} does: rename one")
                jobs[job.lower()] = str(file)
                wanted = []
                if run_data_pipeline:
                    for entry in fold_input.get("sequences", []):
                        (kind, chain), = entry.items()
                        if needs_data(kind, chain):
                            wanted.append(chains.setdefault((kind, chain["sequence"]), ChainData(kind, chain["sequence"])))
                forecast = memory_forecast.forecast(fold_input, buckets)
                for seed in dict.fromkeys(seeds):
                    digest = hashlib.sha256(json.dumps({**fold_input, "modelSeeds": [seed]}, sort_keys=True).encode()).hexdigest()
                    tasks.append(Task(job, seed, str(file), index, forecast.tokens, forecast.bucket, forecast.peak_gb, tuple(wanted), digest))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            rejected[str(file)] = str(exc) or type(exc).__name__
    tasks.sort(key=lambda t: (t.bucket, t.job, t.seed))
    return Plan(tasks, list(chains.values()), rejected)


def task_input(task: Task, chain_data: dict[str, dict]) -> dict:
    """The AF3 input JSON of one task: its seed only, and the data pipeline's results filled in."""
    fold_input = _load(pathlib.Path(task.source))[task.index]
    fold_input["modelSeeds"] = [task.seed]
    for entry in fold_input.get("sequences", []):
        (kind, chain), = entry.items()
        if needs_data(kind, chain):
            found = chain_data.get(ChainData(kind, chain["sequence"]).key)
            if found is not None:
                chain.update(found)
    return fold_input


def chain_input(chain: ChainData) -> dict:
    """A one-chain AF3 input for the data pipeline to search."""
    return {"name": f"chain_{chain.key}", "modelSeeds": [1], "dialect": "alphafold3", "version": 1,
            "sequences": [{chain.kind: {"id": "A", "sequence": chain.sequence}}]}
