"""Rewrite one function of an imported module from its own source.

Why this shape: the plugin must never carry a copy of AlphaFold 3's code, and
it must keep the function *object* AF3 already handed out (``from ... import
sample``, haiku's method wrappers, ``functools.partial`` objects) working.  So
we re-parse the module's own source file, change a few expressions inside one
function, compile that function again with the same free variables, and swap
only its ``__code__``.  Restoring is swapping the original code back.

Every rewrite is an exact structural match (``ast.dump`` equality, formatting
and comments ignored): if AF3 changed the expression we do not recognise it
and touch nothing.
"""

from __future__ import annotations
import __future__

import ast
import copy
import dataclasses
import inspect
import types
from typing import Any

_FACTORY = "__af3_cpu_patch_factory__"
_CLASS = "__af3_cpu_patch_class__"


class SourceMismatch(Exception):
    """The target's source is not what the patch expects; nothing was changed."""


class TargetNotFound(Exception):
    """The module has no such function (or its source cannot be read)."""


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """Replace every occurrence of one expression (or statement) by another.

    ``stock`` is the form AF3 ships, ``patched`` the guarded form.  A target
    that already contains ``patched`` (and no ``stock``) is reported as fixed
    upstream.  ``count`` is how many occurrences the stock code has;
    ``optional`` rewrites may be absent in some versions.  Optional rewrites
    with a ``form`` label are one version's way of writing the site: a
    target needs every rewrite of one form, not of all forms.
    """

    stock: str
    patched: str
    count: int = 1
    optional: bool = False
    form: str = ""

    def stock_dump(self) -> str:
        return _node_dump(_parse_fragment(self.stock))

    def patched_node(self) -> ast.AST:
        return _parse_fragment(self.patched)

    def patched_dump(self) -> str:
        return _node_dump(self.patched_node())


def _parse_fragment(text: str) -> ast.AST:
    body = ast.parse(text.strip()).body
    if len(body) != 1:
        raise ValueError(f"a rewrite must be one expression or statement: {text!r}")
    node = body[0]
    return node.value if isinstance(node, ast.Expr) else node


def _node_dump(node: ast.AST) -> str:
    return ast.dump(node, annotate_fields=False, include_attributes=False)


def count_matches(scope: ast.AST, dump: str) -> int:
    """How many nodes under ``scope`` have exactly this structure."""
    return sum(1 for n in ast.walk(scope) if _node_dump(n) == dump)


class _Replacer(ast.NodeTransformer):
    def __init__(self, rewrites: tuple[Rewrite, ...]):
        self._table = {r.stock_dump(): r for r in rewrites}
        self.done = 0

    def generic_visit(self, node):
        rewrite = self._table.get(_node_dump(node))
        if rewrite is not None:
            self.done += 1
            new = rewrite.patched_node()
            for child in ast.walk(new):
                ast.copy_location(child, node)
                child.end_lineno, child.end_col_offset = node.end_lineno, node.end_col_offset
            return new
        return super().generic_visit(node)


@dataclasses.dataclass
class Located:
    """A function found both at run time and in its module's source."""

    host: types.FunctionType  # the function object whose __code__ is swapped
    host_node: ast.FunctionDef  # its definition in the module source
    scope_node: ast.FunctionDef  # the (possibly nested) function the rewrites touch
    filename: str
    compile_flags: int  # the module's ``from __future__`` flags


def locate(module: types.ModuleType, qualname: str) -> Located:
    """Find ``qualname`` (``Class.method``, ``outer.inner``) in ``module``.

    Attributes are followed through classes until the first function; the rest
    of the dotted name are functions nested inside it, found only in the AST.
    """
    parts = qualname.split(".")
    obj: Any = module
    host = None
    depth = 0
    for depth, part in enumerate(parts, 1):
        raw = inspect.getattr_static(obj, part, None) if not isinstance(obj, types.ModuleType) else obj.__dict__.get(part)
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        if raw is None:
            raise TargetNotFound(f"{module.__name__} has no {'.'.join(parts[:depth])}")
        if inspect.isclass(raw):
            obj = raw
            continue
        host = inspect.unwrap(raw) if callable(raw) else raw
        break
    if not isinstance(host, types.FunctionType):
        raise TargetNotFound(f"{module.__name__}.{qualname} is not a Python function")

    filename = getattr(module, "__file__", None)
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError) as exc:
        raise TargetNotFound(f"source of {module.__name__} cannot be read ({exc})") from None
    tree = ast.parse(source, filename=filename or "<unknown>")

    host_node, node = find_def(tree, parts, module.__name__)
    if not isinstance(host_node, ast.FunctionDef) or not isinstance(node, ast.FunctionDef):
        raise TargetNotFound(f"{module.__name__}.{qualname} is not a plain function in source")
    if host_node.name != host.__code__.co_name:
        raise TargetNotFound(f"{module.__name__}.{qualname}: runtime function {host.__code__.co_name!r} does not match the source")
    flags = 0
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            for alias in stmt.names:
                flags |= getattr(__future__, alias.name).compiler_flag
    return Located(host=host, host_node=host_node, scope_node=node, filename=filename or "<unknown>", compile_flags=flags)


def find_def(tree: ast.AST, parts: list[str], where: str) -> tuple[ast.AST, ast.AST]:
    """(the host function's definition, the definition named by all of ``parts``).

    Names are direct children while they are classes; the first function is
    the host, and the remaining names are functions nested anywhere inside it.
    """
    node, host_node = tree, None
    for i, part in enumerate(parts):
        children = ast.iter_child_nodes(node) if host_node is None else ast.walk(node)
        found = next(
            (c for c in children if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and c.name == part and c is not node),
            None,
        )
        if found is None:
            raise TargetNotFound(f"{where}.{'.'.join(parts[: i + 1])} not found in source")
        node = found
        if host_node is None and not isinstance(found, ast.ClassDef):
            host_node = found
    return host_node, node


def classify_source(source: str, qualname: str, rewrites: tuple[Rewrite, ...], where: str = "<source>") -> str:
    """:func:`classify` on a file's text, without importing it (for offline checks)."""
    _, scope = find_def(ast.parse(source), qualname.split("."), where)
    return classify(scope, rewrites)


def classify(scope: ast.AST, rewrites: tuple[Rewrite, ...]) -> str:
    """'stock', 'fixed' (every rewrite already in patched form) or 'mismatch'."""
    stock = fixed = True
    present = 0
    for r in rewrites:
        n_stock = count_matches(scope, r.stock_dump())
        n_fixed = count_matches(scope, r.patched_dump())
        if r.optional and n_stock == 0 and n_fixed == 0:
            continue
        present += 1
        stock &= n_stock == r.count and n_fixed == 0
        fixed &= n_fixed == r.count and n_stock == 0
    if not present:  # every rewrite optional, none of them there: nothing to patch is not "stock"
        return "mismatch"
    if stock:
        return "stock"
    if fixed:
        return "fixed"
    return "mismatch"


def missing_optional(scope: ast.AST, rewrites: tuple[Rewrite, ...]) -> list[str]:
    """Optional rewrites a stock target lacks: each unlabelled one, and the forms if no form is whole."""
    def present(r: Rewrite) -> bool:
        return count_matches(scope, r.stock_dump()) > 0

    forms: dict[str, list[Rewrite]] = {}
    for r in rewrites:
        if r.optional and r.form:
            forms.setdefault(r.form, []).append(r)
    missing = [f"`{r.stock}`" for r in rewrites if r.optional and not r.form and not present(r)]
    if forms and not any(all(present(r) for r in members) for members in forms.values()):
        missing.append("a whole form (" + " or ".join(forms) + ")")
    return missing


def describe_mismatch(scope: ast.AST, rewrites: tuple[Rewrite, ...]) -> str:
    parts = []
    for r in rewrites:
        n = count_matches(scope, r.stock_dump())
        if n != r.count and not (r.optional and n == 0):
            parts.append(f"expected {r.count}x `{r.stock}`, found {n}")
    if not parts and all(r.optional and not count_matches(scope, r.patched_dump()) for r in rewrites):
        return "found none of " + ", ".join(f"`{r.stock}`" for r in rewrites)
    return "; ".join(parts) or "stock and patched forms are mixed"


def build_code(located: Located, rewrites: tuple[Rewrite, ...]) -> types.CodeType:
    """Compile the host function with ``rewrites`` applied inside the scope."""
    return build_code_all(((located, rewrites),))


def build_code_all(parts: tuple[tuple[Located, tuple[Rewrite, ...]], ...]) -> types.CodeType:
    """Compile one host function with each part's rewrites applied inside that part's scope.

    Several patches may rewrite one host (``sample`` and its nested
    ``sample.apply_denoising_step``); the host's code is then compiled once
    from its source with all of them, so applying one never drops another's.
    """
    first = parts[0][0]
    host_node = copy.deepcopy(first.host_node)
    # Find every part's scope in the copy before anything in it changes.
    scopes = []
    for located, _ in parts:
        if located.host_node is not first.host_node and _node_dump(located.host_node) != _node_dump(first.host_node):
            raise SourceMismatch("parts of one host rewrite different functions")
        if located.scope_node is located.host_node:
            scopes.append(host_node)
            continue
        target_dump = _node_dump(located.scope_node)
        scopes.append(next(n for n in ast.walk(host_node) if isinstance(n, ast.FunctionDef) and _node_dump(n) == target_dump))
    for (located, rewrites), scope in zip(parts, scopes):
        replacer = _Replacer(rewrites)
        replacer.visit(scope)
        expected = sum(r.count for r in rewrites if count_matches(located.scope_node, r.stock_dump()))
        if replacer.done != expected:
            raise SourceMismatch(f"rewrote {replacer.done} sites, expected {expected}")
    host_node.decorator_list = []
    return _compile_like(host_node, first)


def _compile_like(fn_node: ast.FunctionDef, located: Located) -> types.CodeType:
    """Compile ``fn_node`` so its code has exactly the original's free variables."""
    original = located.host
    orig = original.__code__
    freevars = [v for v in orig.co_freevars if v != "__class__"]
    body: list[ast.stmt] = [_stub(f"{v} = None") for v in freevars]
    if "__class__" in orig.co_freevars:
        holder = _stub(f"class {_CLASS}: pass")
        holder.body = [fn_node]
        body.append(holder)
        body.append(_stub(f"return {_CLASS}.__dict__[{fn_node.name!r}]"))
    else:
        body.append(fn_node)
        body.append(_stub(f"return {fn_node.name}"))
    factory = _stub(f"def {_FACTORY}(): pass")
    factory.body = body
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)  # only the factory's own nodes lack positions
    namespace: dict[str, Any] = {}
    code = compile(module, located.filename, "exec", flags=located.compile_flags, dont_inherit=True)
    exec(code, original.__globals__, namespace)  # noqa: S102 - compiling the target's own source
    new_fn = namespace[_FACTORY]()
    code = new_fn.__code__
    if code.co_freevars != orig.co_freevars:
        raise SourceMismatch(f"free variables changed: {code.co_freevars} != {orig.co_freevars}")
    return _requalify(code, code.co_qualname, orig.co_qualname) if hasattr(code, "co_qualname") else code


def _stub(text: str) -> ast.stmt:
    return ast.parse(text).body[0]


def _requalify(code: types.CodeType, old: str, new: str) -> types.CodeType:
    """Give the recompiled code (and its nested functions) their original qualnames."""
    consts = tuple(_requalify(c, old, new) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    qualname = new + code.co_qualname[len(old):] if code.co_qualname.startswith(old) else code.co_qualname
    return code.replace(co_consts=consts, co_qualname=qualname)
