"""The rewrite machinery on small modules of its own: closures, methods, decorators."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import traceback

import pytest

from af3_cpu_patch.engine import source_rewrite
from af3_cpu_patch.engine.source_rewrite import Rewrite

MODULE = '''
import functools
import math

SCALE = 3.0


def decorate(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


def outer(x, offset):
    def inner(y):
        return math.sqrt(y - offset) + SCALE
    return inner(x)


class Base:
    def value(self, x):
        return x


class Child(Base):
    @decorate
    def value(self, x):
        return super().value(math.sqrt(x - 1.0))


def fails(x):
    return math.sqrt(x - 1.0) / 0
'''


@pytest.fixture
def module(tmp_path):
    path = tmp_path / "rewrite_target.py"
    path.write_text(textwrap.dedent(MODULE))
    spec = importlib.util.spec_from_file_location("rewrite_target", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rewrite_target"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("rewrite_target", None)


CLAMP_OFFSET = Rewrite("math.sqrt(y - offset)", "math.sqrt(max(y - offset, 0.0))")


def _apply(module, qualname, rewrites):
    located = source_rewrite.locate(module, qualname)
    assert source_rewrite.classify(located.scope_node, rewrites) == "stock"
    code = source_rewrite.build_code(located, rewrites)
    located.host.__code__ = code
    return located.host


def test_nested_function_with_closure_is_rewritten(module):
    with pytest.raises(ValueError):
        module.outer(1.0, 2.0)
    host = _apply(module, "outer.inner", (CLAMP_OFFSET,))
    assert host is module.outer
    assert module.outer(1.0, 2.0) == 3.0
    assert module.outer(6.0, 2.0) == 5.0  # unchanged where the argument was valid


def test_method_using_super_behind_a_decorator(module):
    with pytest.raises(ValueError):
        module.Child().value(0.0)
    _apply(module, "Child.value", (Rewrite("math.sqrt(x - 1.0)", "math.sqrt(max(x - 1.0, 0.0))"),))
    assert module.Child().value(0.0) == 0.0
    assert module.Child().value(5.0) == 2.0
    assert module.Child.value.__code__.co_name == "wrapper"  # the decorator's wrapper is kept


def test_qualnames_and_traceback_lines_point_at_the_original_source(module):
    original_line = module.fails.__code__.co_firstlineno
    _apply(module, "fails", (Rewrite("math.sqrt(x - 1.0)", "math.sqrt(max(x - 1.0, 0.0))"),))
    assert module.fails.__code__.co_qualname == "fails"
    assert module.outer.__code__.co_qualname == "outer"
    with pytest.raises(ZeroDivisionError) as info:
        module.fails(0.0)
    frame = traceback.extract_tb(info.tb)[-1]
    assert frame.filename == module.__file__
    assert frame.lineno == original_line + 1
    assert frame.line.strip() == "return math.sqrt(x - 1.0) / 0"


def test_classify_sees_upstream_and_unknown_forms(module):
    located = source_rewrite.locate(module, "outer.inner")
    assert source_rewrite.classify(located.scope_node, (Rewrite("math.sqrt(y - offset)", "abs(y)"),)) == "stock"
    assert source_rewrite.classify(located.scope_node, (Rewrite("math.sqrt(y + offset)", "math.sqrt(y - offset)"),)) == "fixed"
    assert source_rewrite.classify(located.scope_node, (Rewrite("math.sqrt(y * offset)", "abs(y)"),)) == "mismatch"
    # the count is part of the match
    assert source_rewrite.classify(located.scope_node, (Rewrite("math.sqrt(y - offset)", "abs(y)", count=2),)) == "mismatch"


def test_missing_targets(module):
    with pytest.raises(source_rewrite.TargetNotFound):
        source_rewrite.locate(module, "nope")
    with pytest.raises(source_rewrite.TargetNotFound):
        source_rewrite.locate(module, "outer.nope")
    with pytest.raises(source_rewrite.TargetNotFound):
        source_rewrite.locate(module, "SCALE")


def test_patches_of_one_host_and_its_nested_function_stack_and_undo_separately(module):
    # sample() and sample.apply_denoising_step are one host: two patches on it
    # must not drop each other's rewrites, whatever order they come and go in.
    from af3_cpu_patch.engine.patch import Numerics, SourcePatch, Status

    def patch(name, function, rewrite):
        return SourcePatch(name=name, why="test", modules=("rewrite_target",), function=function,
                           rewrites=(rewrite,), versions=("3.0.0", "3.0.4"), requires_globals=(), numerics=Numerics.IDENTICAL)

    nested = patch("clamp", "outer.inner", CLAMP_OFFSET)
    host = patch("double", "outer", Rewrite("inner(x)", "2 * inner(x)"))
    stock = module.outer.__code__
    first, second = nested.apply(module, None), host.apply(module, None)
    assert (first.status, second.status) == (Status.APPLIED, Status.APPLIED)
    assert module.outer(1.0, 2.0) == 6.0  # clamped, then doubled
    assert first.in_place() and second.in_place()
    first.undo()
    assert second.in_place() and not first.in_place()
    with pytest.raises(ValueError):  # the clamp is gone, the doubling stays
        module.outer(1.0, 2.0)
    assert module.outer(6.0, 2.0) == 10.0
    second.undo()
    assert module.outer.__code__ is stock


def test_a_patch_whose_rewrites_are_all_optional_and_absent_is_a_mismatch(module):
    located = source_rewrite.locate(module, "outer.inner")
    absent = (Rewrite("math.log(y)", "abs(y)", optional=True), Rewrite("math.exp(y)", "abs(y)", optional=True))
    assert source_rewrite.classify(located.scope_node, absent) == "mismatch"
    assert "found none of" in source_rewrite.describe_mismatch(located.scope_node, absent)
    present = (Rewrite("math.log(y)", "abs(y)", optional=True), Rewrite("math.sqrt(y - offset)", "abs(y)", optional=True))
    assert source_rewrite.classify(located.scope_node, present) == "stock"
