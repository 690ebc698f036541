"""How patches verify their targets and report what they did, on small modules written here.

A wrapper patch checks the parameters it relies on before wrapping and
leaves a target with another signature alone; a source patch whose
optional rewrites are partly absent says so; ``--exact`` keeps no patch
that changes numbers; an AF3 source that is no release's is reported as
"<version> + later commits".
"""

from __future__ import annotations

import sys
import types

import pytest

from af3_cpu_patch.af3 import install as af3_install
from af3_cpu_patch.patches import BATCH_PATCHES, CLI_PATCHES, PROGRESS_PATCHES, exact
from af3_cpu_patch.engine.patch import Numerics, SourcePatch, Status, WrapperPatch
from af3_cpu_patch.engine.source_rewrite import Rewrite


def _module(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    sys.modules[name] = module
    return module


def _wrapper(wrapped, instance, args, kwargs):
    return ("wrapped", wrapped(*args, **kwargs))


def _wrapper_patch(function, parameters):
    return WrapperPatch(name="w", why="test", modules=("m",), function=function, versions=("3.0.0", "3.0.4"),
                        numerics=Numerics.IDENTICAL, wrapper=_wrapper, parameters=parameters)


@pytest.mark.parametrize("source, function, expected", [
    ("def sample(denoising_step, batch, key, config):\n    return 1\n", "sample", Status.APPLIED),
    ("def sample(denoiser, batch, key, config):\n    return 1\n", "sample", Status.MISMATCH),
    ("def sample(denoising_step, batch, config):\n    return 1\n", "sample", Status.MISMATCH),
    ("class Runner:\n    def run(self, featurised_example, rng_key):\n        return 1\n", "Runner.run", Status.APPLIED),
    ("class Runner:\n    def run(self, example, key):\n        return 1\n", "Runner.run", Status.MISMATCH),
    ("class F:\n    @classmethod\n    def compute(cls, layout, size):\n        return 1\n", "F.compute", Status.APPLIED),
])
def test_wrapper_patch_checks_the_parameters_it_relies_on(tmp_path, source, function, expected):
    module = _module(tmp_path, f"target_{abs(hash(source))}", source)
    parameters = {"sample": ("denoising_step", "batch", "key", "config"), "Runner.run": ("featurised_example", "rng_key"),
                  "F.compute": ("layout", "size")}[function]
    owner_path, _, attr = function.rpartition(".")
    owner = getattr(module, owner_path) if owner_path else module
    original = vars(owner)[attr]
    outcome = _wrapper_patch(function, parameters).apply(module, "3.0.4")
    assert outcome.status is expected, outcome.detail
    if expected is Status.MISMATCH:
        assert vars(owner)[attr] is original, "a target that did not match must be left alone"
        assert "the wrapper needs" in outcome.detail
    else:
        call = getattr(owner() if owner_path == "Runner" else owner, attr)
        assert (call(1, 2) if owner_path else call(1, 2, 3, 4)) == ("wrapped", 1)
        outcome.undo()
        assert vars(owner)[attr] is original


def _source_patch(rewrites):
    return SourcePatch(name="s", why="test", modules=("m",), function="f", versions=("3.0.0", "3.0.4"),
                       numerics=Numerics.IDENTICAL, rewrites=rewrites, requires_globals=())


@pytest.mark.parametrize("body, rewrites, expected, detail", [
    # an optional rewrite absent: in part, naming it
    ("    a = g(x)\n    return a\n", (Rewrite("g(x)", "h(x)"), Rewrite("k(x)", "h(x)", optional=True)),
     Status.PARTIAL, "`k(x)`"),
    ("    a = g(x)\n    b = k(x)\n    return a + b\n", (Rewrite("g(x)", "h(x)"), Rewrite("k(x)", "h(x)", optional=True)),
     Status.APPLIED, ""),
    # forms: one whole form is enough
    ("    return g(x) + k(x)\n", (Rewrite("g(x)", "h(x)", optional=True, form="new"),
                                Rewrite("j(x)", "h(x)", optional=True, form="old"),
                                Rewrite("k(x)", "h(x)"),), Status.APPLIED, ""),
])
def test_source_patch_reports_missing_optional_rewrites(tmp_path, body, rewrites, expected, detail):
    module = _module(tmp_path, f"src_{abs(hash(body + repr(rewrites)))}", "def f(x):\n" + body)
    outcome = _source_patch(rewrites).apply(module, "3.0.4")
    assert outcome.status is expected, outcome.detail
    assert detail in outcome.detail
    assert outcome.status.in_effect
    outcome.undo()


def test_exact_keeps_what_a_cpu_needs_and_nothing_that_changes_numbers():
    for patches in (CLI_PATCHES, BATCH_PATCHES, CLI_PATCHES + PROGRESS_PATCHES):
        kept = exact(patches)
        assert all(p.numerics is not Numerics.CHANGES for p in kept)
        assert {p.name for p in patches if p.numerics is Numerics.NEEDED} <= {p.name for p in kept}
        assert len(kept) < len(patches)
    for patch in CLI_PATCHES + PROGRESS_PATCHES:
        assert bool(patch.difference) == (patch.numerics is Numerics.CHANGES), patch.name


def _package(tmp_path, folding_input: str, version: str, git_head: str | None = None):
    package = tmp_path / "checkout" / "src" / "alphafold3"
    (package / "common").mkdir(parents=True)
    (package / "model" / "network").mkdir(parents=True)
    (package / "model" / "network" / "diffusion_head.py").write_text("")
    (package / "common" / "folding_input.py").write_text(folding_input)
    (package / "version.py").write_text(f"__version__ = '{version}'\n")
    if git_head:
        git = tmp_path / "checkout" / ".git"
        (git / "refs" / "heads").mkdir(parents=True)
        (git / "HEAD").write_text("ref: refs/heads/main\n")
        (git / "refs" / "heads" / "main").write_text(git_head + "\n")
    return package


def test_a_source_past_its_release_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(af3_install, "_metadata_version", lambda: None)
    info = af3_install.inspect_package(_package(tmp_path, "# edited\n", "3.0.4", "c0f97eda2f1f482fd94d3a38bece18c7069b4a5c"))
    assert (info.version, info.past_release, info.commit) == ("3.0.4", True, "c0f97eda2f1f482fd94d3a38bece18c7069b4a5c")
    assert info.label == "3.0.4 + later commits (c0f97ed)"
    assert "matches no release" in info.describe()


def test_a_release_is_named_by_its_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setattr(af3_install, "FINGERPRINTS", {af3_install.hashlib.sha256(b"# v3.0.3\n").hexdigest(): "3.0.3"})
    info = af3_install.inspect_package(_package(tmp_path, "# v3.0.3\n", "3.0.2"))  # v3.0.3's version.py says 3.0.2
    assert (info.version, info.past_release, info.label) == ("3.0.3", False, "3.0.3")
