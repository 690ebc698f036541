"""Stand-in for AF3's input loaders: the few checks the CLI tests need, nothing more."""

import json
import pathlib


def _check(data, path):
    for key in ("name", "sequences", "modelSeeds"):
        if not data.get(key):
            raise ValueError(f"{path}: AF3 input needs a non-empty {key!r}")
    if data["name"].startswith("fail"):  # the tests' input that AF3 rejects
        raise ValueError(f"stand-in rejects input {data['name']!r}")
    return data


def load_fold_inputs_from_path(json_path):
    yield _check(json.loads(pathlib.Path(json_path).read_text()), json_path)


def load_fold_inputs_from_dir(input_dir):
    for path in sorted(pathlib.Path(input_dir).glob("*.json")):
        yield from load_fold_inputs_from_path(path)
