"""install / uninstall / report, hook order, unrecognised sources, auto-activation."""

from __future__ import annotations

import importlib.util
import pathlib
import sysconfig

import pytest

from tests.helpers import STANDIN, run_python, standin_variant

HEAD = "alphafold3.model.network.diffusion_head"


def test_round_trip_restores_original_code_and_is_idempotent():
    result = run_python(
        f"""
        import json, warnings
        import af3_cpu_patch
        from {HEAD.rsplit('.', 1)[0]} import diffusion_head as dh
        from alphafold3.model.network import noise_level_embeddings as nle
        fns = [dh.sample, dh.DiffusionHead.__call__, nle.noise_embeddings]
        patched = [f.__code__ for f in fns]
        again = af3_cpu_patch.install()               # idempotent
        same = all(f.__code__ is c for f, c in zip(fns, patched))
        from af3_cpu_patch.engine import hooks
        in_place = [hooks.applied("denoising-step-sqrt"), hooks.applied("no-such-patch")]
        af3_cpu_patch.uninstall()
        in_place.append(hooks.applied("denoising-step-sqrt"))
        restored = [f.__code__ for f in fns]
        after_uninstall = {{r.patch: str(r.status) for r in af3_cpu_patch.report()}}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            af3_cpu_patch.install()
        repatched = [f.__code__ for f in fns]
        print(json.dumps({{
            "idempotent": same,
            "in_place": in_place,
            "second_install_report": {{r.patch: str(r.status) for r in again}},
            "changed": [p is not r for p, r in zip(patched, restored)],
            "reinstall_differs_from_original": [c is not r for c, r in zip(repatched, restored)],
            "after_uninstall": after_uninstall,
            "late_warning": any("clear_caches" in str(w.message) for w in caught),
            "qualname": dh.sample.__code__.co_consts and [c.co_qualname for c in dh.sample.__code__.co_consts if hasattr(c, "co_qualname")],
        }}))
        """,
        pythonpath=[STANDIN],
    )
    assert result["idempotent"]
    assert result["in_place"] == [True, False, False]  # hooks.applied: installed, unknown, after uninstall
    assert result["second_install_report"]["denoising-step-sqrt"] == "applied"
    assert result["changed"] == [True, True, True]
    assert result["after_uninstall"]["denoising-step-sqrt"] == "removed"
    assert result["reinstall_differs_from_original"] == [True, True, True]
    assert result["late_warning"], "re-installing over imported modules must warn about jit caches"
    assert "sample.<locals>.apply_denoising_step" in result["qualname"]


def test_uninstall_restores_the_exact_code_object():
    result = run_python(
        """
        import json
        from alphafold3.model.network import diffusion_head as dh
        original = dh.sample.__code__
        import af3_cpu_patch
        patched = dh.sample.__code__
        af3_cpu_patch.uninstall()
        print(json.dumps({"patched": patched is not original, "restored": dh.sample.__code__ is original}))
        """,
        pythonpath=[STANDIN],
    )
    assert result == {"patched": True, "restored": True, "_stderr": result["_stderr"]}


@pytest.mark.parametrize("plugin_first", [True, False])
def test_hook_order(plugin_first):
    imports = ["import af3_cpu_patch", f"import {HEAD}"]
    if not plugin_first:
        imports.reverse()
    result = run_python(
        f"""
        import json, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            {imports[0]}
            {imports[1]}
        import af3_cpu_patch
        print(json.dumps({{
            "report": {{r.patch: str(r.status) for r in af3_cpu_patch.report()}},
            "warned_late": any("after it was imported" in str(w.message) for w in caught),
        }}))
        """,
        pythonpath=[STANDIN],
    )
    assert result["report"]["denoising-step-sqrt"] == "applied"
    assert result["warned_late"] is (not plugin_first)


def test_report_contents():
    result = run_python(
        """
        import json, dataclasses
        import af3_cpu_patch
        before = [dataclasses.asdict(r) for r in af3_cpu_patch.report()]
        import alphafold3.model.network.diffusion_head
        after = [dataclasses.asdict(r) for r in af3_cpu_patch.report()]
        print(json.dumps({"before": before, "after": after, "text": af3_cpu_patch.format_report()}, default=str))
        """,
        pythonpath=[STANDIN],
    )
    before = {r["patch"]: r for r in result["before"]}
    after = {r["patch"]: r for r in result["after"]}
    assert before["denoising-step-sqrt"]["status"] == "waiting for import"
    row = after["denoising-step-sqrt"]
    assert row["status"] == "applied"
    assert row["module"] == HEAD
    assert pathlib.Path(row["file"]) == STANDIN / "alphafold3/model/network/diffusion_head.py"
    assert row["af3_version"] == "3.0.2"
    assert "FMA" in row["why"]
    # v3.0.0/1-only site on a v3.0.2-layout AF3: reported, not warned about.
    assert after["noise-embedding-log-inline"]["status"] == "not needed"
    assert "denoising-step-sqrt: applied" in result["text"]
    assert str(STANDIN / "alphafold3") in result["text"].splitlines()[0]


CHECK_UNTOUCHED = """
import json, warnings, sys
warnings.simplefilter("always")
from alphafold3.model.network import diffusion_head as dh
original = dh.sample.__code__
with warnings.catch_warnings(record=True) as caught:
    import af3_cpu_patch
report = {r.patch: [str(r.status), r.detail] for r in af3_cpu_patch.report()}
print(json.dumps({
    "report": report,
    "untouched": dh.sample.__code__ is original,
    "warnings": [str(w.message) for w in caught],
}))
"""


def test_unrecognised_source_is_left_untouched_and_reported(tmp_path):
    changed = standin_variant(
        tmp_path, "jnp.sqrt(t_hat**2 - noise_level_prev**2)", "jnp.sqrt(t_hat * t_hat - noise_level_prev**2)"
    )
    result = run_python(CHECK_UNTOUCHED, pythonpath=[changed])
    status, detail = result["report"]["denoising-step-sqrt"]
    assert status == "source did not match"
    assert "t_hat**2 - noise_level_prev**2" in detail
    assert result["untouched"]
    assert any("denoising-step-sqrt" in w and "untouched" in w for w in result["warnings"])


def test_upstream_fix_is_recognised_and_not_touched(tmp_path):
    fixed = standin_variant(
        tmp_path,
        "jnp.sqrt(t_hat**2 - noise_level_prev**2)",
        "jnp.sqrt(\n            jnp.maximum(t_hat**2 - noise_level_prev**2, 0.0)  # as upstream v3.0.4\n        )",
    )
    result = run_python(CHECK_UNTOUCHED, pythonpath=[fixed])
    assert result["report"]["denoising-step-sqrt"][0] == "already fixed upstream"
    assert result["untouched"]
    assert not any("denoising-step-sqrt" in w for w in result["warnings"])


def test_missing_function_is_reported_as_target_not_found(tmp_path):
    renamed = standin_variant(tmp_path, "def sample(", "def sample_v2(")
    result = run_python(CHECK_UNTOUCHED.replace("dh.sample.__code__", "dh.sample_v2.__code__"), pythonpath=[renamed])
    assert result["report"]["denoising-step-sqrt"][0] == "target not found"
    assert result["untouched"]


def _pth_installed() -> bool:
    spec = importlib.util.find_spec("af3_cpu_patch")
    purelib = pathlib.Path(sysconfig.get_paths()["purelib"])
    return spec is not None and (purelib / "af3_cpu_patch.pth").is_file()


@pytest.mark.skipif(not _pth_installed(), reason="af3-cpu-patch is not pip-installed here, so its .pth file is absent")
@pytest.mark.parametrize("value, active", [("1", True), ("0", False), (None, False)])
def test_env_variable_activates_patches_in_unmodified_scripts(value, active):
    code = """
    import json, sys
    loaded_at_startup = "af3_cpu_patch" in sys.modules
    from alphafold3.model.network import diffusion_head as dh
    status = None
    if loaded_at_startup:
        status = {r.patch: str(r.status) for r in sys.modules["af3_cpu_patch"].report()}["denoising-step-sqrt"]
    print(json.dumps({"loaded": loaded_at_startup, "status": status}))
    """
    env = {"AF3_CPU_PATCH": value} if value is not None else {}
    result = run_python(code, pythonpath=[STANDIN], env=env)
    assert result["loaded"] is active
    assert result["status"] == ("applied" if active else None)


def test_placeholder_alphafold3_is_detected(tmp_path):
    fake = tmp_path / "site" / "alphafold3"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""A placeholder package, like the one on PyPI."""\n')
    result = run_python(
        """
        import json
        from af3_cpu_patch.af3 import install as af3_install
        info = af3_install.detect()
        print(json.dumps({"found": info.found, "deepmind": info.is_deepmind, "problem": info.problem()}))
        """,
        pythonpath=[tmp_path / "site"],
    )
    assert result["found"] and not result["deepmind"]
    assert "not DeepMind's AlphaFold 3" in result["problem"]
    assert "placeholder" in result["problem"]
