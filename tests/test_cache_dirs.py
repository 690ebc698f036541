"""The JAX compilation cache is kept per CPU instruction set and per jax/jaxlib version."""

from __future__ import annotations

import importlib.metadata
import pathlib

from af3_cpu_patch import predict
from af3_cpu_patch.cli import options
from af3_cpu_patch.host import cache_dirs
from af3_cpu_patch.host import cpu_info

SKYLAKE = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt fma avx avx2 avx512f avx512bw avx512vl hypervisor constant_tsc".split()
HASWELL = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt fma avx avx2 hypervisor constant_tsc".split()


def test_cpus_with_other_instruction_sets_get_other_keys():
    skylake, haswell = (cache_dirs.cpu_key("x86_64", "Intel Xeon", flags) for flags in (SKYLAKE, HASWELL))
    assert skylake != haswell
    assert skylake.startswith("x86_64-fma-avx2-avx512-") and haswell.startswith("x86_64-fma-avx2-")
    # The same instruction set, listed in another order and with other non-ISA flags (a VM, mitigations): the same key.
    shuffled = [f for f in reversed(HASWELL) if f != "hypervisor"] + ["ibrs", "md_clear", "tsc_known_freq"]
    assert cache_dirs.cpu_key("x86_64", "Intel Xeon", shuffled) == haswell
    # XLA tunes for the model: another model name is another key.
    assert cache_dirs.cpu_key("x86_64", "AMD EPYC 7763", HASWELL) != haswell
    assert cache_dirs.cpu_key("aarch64", "", ["fp", "asimd", "sve"]).startswith("aarch64-neon-sve-")


def test_compilation_cache_per_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_info, "cpu_model", lambda: "Intel Xeon")
    dirs = {}
    for name, flags in (("skylake", SKYLAKE), ("haswell", HASWELL), ("haswell again", list(reversed(HASWELL)))):
        monkeypatch.setattr(cpu_info, "flags", lambda flags=flags: frozenset(flags))
        dirs[name] = cache_dirs.compilation_cache(tmp_path)
    assert dirs["skylake"] != dirs["haswell"] == dirs["haswell again"]
    assert all(d.parent == tmp_path for d in dirs.values())


def test_jax_versions_are_in_the_path(tmp_path, monkeypatch):
    installed = f"jax{importlib.metadata.version('jax')}-jaxlib{importlib.metadata.version('jaxlib')}"
    assert cache_dirs.compilation_cache(tmp_path).name.endswith(installed)
    assert cache_dirs.jax_versions({"jax": "9.1.0", "jaxlib": "9.1.1"}.__getitem__) == "jax9.1.0-jaxlib9.1.1"

    def only_jax(name):
        if name != "jax":
            raise importlib.metadata.PackageNotFoundError(name)
        return "9.1.0"

    assert cache_dirs.jax_versions(only_jax) == "jax9.1.0-jaxlib-none"


def test_default_and_given_cache_dirs_get_the_same_subdirectory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    default = cache_dirs.compilation_cache()
    assert default.parent == tmp_path / "xdg" / "af3-cpu" / "jax"
    given = options.cache_dir(pathlib.Path(tmp_path / "shared"), no_cache=False)
    assert given == (tmp_path / "shared").resolve() / default.name
    assert options.cache_dir(None, no_cache=False) == predict.DEFAULT_CACHE
    assert predict.DEFAULT_CACHE.name == default.name
    assert options.cache_dir(tmp_path, no_cache=True) is None
