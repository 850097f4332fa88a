"""The hook: teaches YOLOv5's `parse_model` our modules without editing YOLOv5's files.

`parse_model` (yolov5/models/yolo.py) resolves YAML module names with `eval` in its module's globals
and decides how to build each layer by membership in two set literals that it rebuilds on every
call: modules taking `(c1, c2, *args)` (channels inserted, c2 scaled by width_multiple) and, among
those, modules taking the repeat count as third argument (like C3). We recompile `parse_model` with
both literals extended by a registry set that lives here, so later registrations need no recompile.

The same rewrite removes parse_model's three `eval` calls (`eval(act)`, `eval(m) if isinstance(m, str)
else m`, `eval(a) if isinstance(a, str) else a`): a model dict may come from a checkpoint anyone wrote,
so each becomes a call of `yolov5_dattn.hosts.yolov5.safe_yaml.resolve`, which resolves names from explicit
namespaces and literals with `ast.literal_eval` and never runs YAML text. A parse_model left with any
`eval` is refused (UnsupportedYOLOv5).

The rewrite also wraps the body of parse_model's per-layer loop in `try/except`: an exception raised while
layer `i` is built leaves with `(i, m, args)` attached (`failing_layer(e)`), so a build error can name its
layer (`preflight`) without reading anyone's frames. Line numbers are kept. This file is the only code that
knows parse_model's internals; every change it makes goes through `yolov5_dattn.patching`.

`REGISTRY` (a `core.registry.Registry`) holds the names: `register_module(cls, channels=True, repeats=False)`,
where `channels` means the constructor starts `(c1, c2, ...)` (parse_model inserts c1 and scales c2 by
width_multiple, rounded to a multiple of 8, as for Conv/C3) and `repeats` that its third argument is the repeat count
n (the YAML's number is depth-scaled and passed as n, as for C3). A name that the host's `models.yolo` defines already
(YOLOv5's own `C3`), or that another class holds, raises `RegistryConflict` saying where the first one is defined,
unless `force=True`. `print(REGISTRY)` lists them (`yolov5-dattn registry`).
"""
import ast
import functools
import inspect
from types import ModuleType, SimpleNamespace
from typing import List, Optional

from yolov5_dattn import patching
from yolov5_dattn.core.registry import Registry, RegistryConflict
from yolov5_dattn.patching import where_defined

__all__ = ["REGISTRY", "RegistryConflict", "UnsupportedYOLOv5", "failing_layer", "install_hook", "register",
           "register_module"]

CHANNEL_SET = "_yolov5_dattn_channel_modules"  # names injected into yolo.py's globals
REPEAT_SET = "_yolov5_dattn_repeat_modules"
RESOLVE = "_yolov5_dattn_resolve"  # safe_yaml.resolve bound to that yolo module
EVAL_ROLES = ("a", "act", "m")  # the variables YOLOv5's parse_model evaluates
LAYER_ATTR = "parse_model_layer"  # set on an exception raised while a layer is built: (i, m, args)
LAYER_ERROR = "_parse_model_layer_error"  # the except clause's local in the rewritten parse_model
HOOK_WHY = "parse_model learns the registered modules, resolves names without eval, names a failing layer"
SETS_WHY = "the registered modules' classes, for parse_model's extended set literals"
RESOLVE_WHY = "safe_yaml.resolve for this yolo module: parse_model's names without eval"
REGISTER_WHY = "a registered module, usable by name in model YAMLs"


class UnsupportedYOLOv5(RuntimeError):
    """The installed YOLOv5's parse_model does not have the shape this hook rewrites."""


def failing_layer(error: BaseException) -> Optional[SimpleNamespace]:
    """The layer a hooked parse_model was building when `error` was raised: SimpleNamespace(i, m, args) (m
    the YAML's module name when that is what failed to resolve), or None when it was raised elsewhere."""
    layer = getattr(error, LAYER_ATTR, None)
    return SimpleNamespace(i=layer[0], m=layer[1], args=layer[2]) if layer is not None else None


class _AttributeLayers(ast.NodeTransformer):
    """Wraps the body of `for i, (f, n, m, args) in enumerate(...)` in try/except that attaches (i, m, args)
    to the exception (the first, innermost layer wins) and re-raises it unchanged."""

    def __init__(self):
        self.wrapped = 0

    def visit_For(self, node):
        self.generic_visit(node)
        target = node.target
        names = [e.id for e in ast.walk(target) if isinstance(e, ast.Name)]
        if names[:1] != ["i"] or not {"m", "args"} <= set(names):
            return node
        handler = ast.parse(
            f"try:\n    pass\nexcept Exception as {LAYER_ERROR}:\n"
            f"    if not hasattr({LAYER_ERROR}, {LAYER_ATTR!r}):\n"
            f"        try:\n            {LAYER_ERROR}.{LAYER_ATTR} = (i, m, args)\n"
            f"        except AttributeError:\n            pass\n"
            f"    raise\n").body[0]
        handler.body = node.body
        for new in ast.walk(handler):  # the new lines take the loop's first line; the body keeps its own
            if new not in node.body and not any(new is x for b in node.body for x in ast.walk(b)):
                if "lineno" in new._attributes:
                    ast.copy_location(new, node.body[0])
        node.body = [handler]
        self.wrapped += 1
        return node


def _refuse(what: str) -> UnsupportedYOLOv5:
    """The error for a parse_model this hook does not know: `what` it expected."""
    try:
        from importlib.metadata import version
        installed = version("yolov5")
    except Exception:  # a git clone has no distribution metadata
        installed = "unknown (not the pip package)"
    return UnsupportedYOLOv5(f"yolov5_dattn: the installed yolov5 {installed} has a parse_model {what}: install "
                             f"yolov5==7.0.14")


class _ExtendModuleSets(ast.NodeTransformer):
    """Adds `*registry_set` to each `m in {..., C3, ...}` set literal of parse_model."""

    def __init__(self):
        self.extended = []

    def visit_Compare(self, node):
        self.generic_visit(node)
        if (isinstance(node.left, ast.Name) and node.left.id == "m" and len(node.ops) == 1
                and isinstance(node.ops[0], ast.In) and isinstance(node.comparators[0], ast.Set)):
            literal = node.comparators[0]
            names = {e.id for e in literal.elts if isinstance(e, ast.Name)}
            if "C3" in names:
                target = CHANNEL_SET if "Conv" in names else REPEAT_SET
                literal.elts.append(ast.Starred(value=ast.Name(id=target, ctx=ast.Load()), ctx=ast.Load()))
                self.extended.append(target)
        return node


class _ReplaceEval(ast.NodeTransformer):
    """Turns `eval(x)` and `eval(x) if isinstance(x, str) else x` (x in EVAL_ROLES) into
    `RESOLVE('x', x, locals())`; the guard goes too, so non-strings are checked by `resolve` as well."""

    def __init__(self):
        self.replaced = []

    @staticmethod
    def _eval_of(node) -> Optional[str]:
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "eval"
                and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.Name)
                and node.args[0].id in EVAL_ROLES):
            return node.args[0].id
        return None

    def _resolve(self, role: str, where) -> ast.Call:
        self.replaced.append(role)
        call = ast.Call(func=ast.Name(id=RESOLVE, ctx=ast.Load()),
                        args=[ast.Constant(role), ast.Name(id=role, ctx=ast.Load()),
                              ast.Call(func=ast.Name(id="locals", ctx=ast.Load()), args=[], keywords=[])],
                        keywords=[])
        return ast.copy_location(call, where)

    def visit_IfExp(self, node):
        role = self._eval_of(node.body)
        if role is not None:
            return self._resolve(role, node)
        return self.generic_visit(node)

    def visit_Call(self, node):
        self.generic_visit(node)
        role = self._eval_of(node)
        return self._resolve(role, node) if role is not None else node


def _patched_parse_model(yolo: ModuleType, *, safe: bool = True):
    """Recompile `yolo.parse_model` with the registry sets and without `eval`; keeps file name and line
    numbers. `safe=False` keeps YOLOv5's `eval` calls (only to compare the two builds in tests)."""
    from . import safe_yaml

    original = yolo.parse_model
    try:
        lines, first_line = inspect.getsourcelines(original)
    except (OSError, TypeError) as e:
        raise _refuse(f"whose source cannot be read ({e}); its .py files are needed") from None
    tree = ast.parse("".join(lines))
    ast.increment_lineno(tree, first_line - 1)
    transformer = _ExtendModuleSets()
    tree = ast.fix_missing_locations(transformer.visit(tree))
    if sorted(transformer.extended) != sorted([CHANNEL_SET, REPEAT_SET]):
        raise _refuse("this plugin does not recognise (expected the two `m in {... C3 ...}` sets of 7.0.x)")
    # a parse_model without 7.0's per-layer loop still works, its build errors just name no layer
    tree = ast.fix_missing_locations(_AttributeLayers().visit(tree))
    if safe:
        no_eval = _ReplaceEval()
        tree = ast.fix_missing_locations(no_eval.visit(tree))
        left = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in ("eval", "exec")]
        if sorted(set(no_eval.replaced)) != sorted(EVAL_ROLES) or left:
            raise _refuse("whose eval calls this plugin does not recognise (expected eval(act), eval(m), eval(a) "
                          "of 7.0.x)")
        patching.patch(yolo, RESOLVE, functools.partial(safe_yaml.resolve, yolo=yolo,
                                                        local_names=frozenset(original.__code__.co_varnames)),
                       why=RESOLVE_WHY)
    namespace = {}
    exec(compile(tree, original.__code__.co_filename, "exec"), vars(yolo), namespace)
    patched = namespace["parse_model"]
    patched.__wrapped__ = original
    return patched


def _host_owner(name: str) -> Optional[str]:
    """Where a hooked `models.yolo` defines `name` itself, if one does."""
    return next((first for first in (_host_conflict(yolo, name) for yolo in _hooked) if first), None)


def _publish_all(_registry=None) -> None:
    """Publish the registry into every hooked `models.yolo` (after each registration)."""
    for yolo in _hooked:
        _publish(yolo)


# YAML name -> Entry; shared by every hooked yolo module (the pip package's, a clone's)
REGISTRY = Registry("yolov5", host_owner=_host_owner, on_change=_publish_all)
_hooked: List[ModuleType] = []


# `register_module(cls, name=None, force=False, channels=True, repeats=False)`, a call or a decorator
register_module = REGISTRY.register_module


def _host_conflict(yolo: ModuleType, name: str) -> Optional[str]:
    """Where the host's own `name` in `yolo`'s globals is defined, if it has one we did not put there."""
    if name not in vars(yolo) or patching.is_patched(yolo, name, REGISTER_WHY):
        return None
    value = vars(yolo)[name]
    return where_defined(value) if isinstance(value, type) or callable(value) else \
        f"{yolo.__name__}.{name} ({getattr(yolo, '__file__', '?')})"


def _publish(yolo: ModuleType) -> None:
    """Put every registered class into `yolo`'s globals and its sets (through `patching`); RegistryConflict
    for a registration (made before this yolo was hooked) whose name the host defines itself."""
    for r in REGISTRY.entries():
        current = patching.patched(yolo, r.name, REGISTER_WHY)
        if current is not None and current.replacement is r.cls:
            continue
        if current is not None:
            patching.undo(where=lambda c: c is current)
        first = _host_conflict(yolo, r.name)
        if first is not None and not r.force:
            REGISTRY.remove(r.name, notify=False)
            raise RegistryConflict(f"register_module: the name {r.name!r} is YOLOv5's own, {first}; pass name= "
                                   f"another name, or force=True to replace it in YAMLs")
        patching.patch(yolo, r.name, r.cls, why=REGISTER_WHY)
    for attr in (CHANNEL_SET, REPEAT_SET):
        if not patching.is_patched(yolo, attr, SETS_WHY):
            patching.patch(yolo, attr, set(), why=SETS_WHY)
    # the sets are ours: updated in place, so a registration needs no new change
    getattr(yolo, CHANNEL_SET).clear()
    getattr(yolo, CHANNEL_SET).update(r.cls for r in REGISTRY if r.channels)
    getattr(yolo, REPEAT_SET).clear()
    getattr(yolo, REPEAT_SET).update(r.cls for r in REGISTRY if r.channels and r.repeats)


def register(yolo: Optional[ModuleType] = None) -> None:
    """Install the hook into `yolo` (default: the pip package's `yolov5.models.yolo`). Idempotent.

    For a git clone of YOLOv5, pass the clone's own `models.yolo` module.
    """
    from .blocks import Bottleneck_DAttention, C3_DAttention
    from yolov5_dattn.nn.dattention import DAttention

    if not len(REGISTRY):
        register_module(C3_DAttention, repeats=True)
        register_module(Bottleneck_DAttention)
        register_module(DAttention, channels=False)  # YAML: [-1, 1, DAttention, [C, [h, w]]]
    if yolo is None:
        import yolov5.models.yolo as yolo
    if not patching.is_patched(yolo, "parse_model", HOOK_WHY):
        patching.patch(yolo, "parse_model", _patched_parse_model(yolo), why=HOOK_WHY)
    if yolo not in _hooked:
        _hooked.append(yolo)
    _publish(yolo)


def install_hook(host=None) -> None:
    """`register` for `host` (a `compat.Host`): the pip package's `yolov5.models.yolo` or a clone's `models.yolo`."""
    register(None if host is None or host.root is None else host.module("models.yolo"))
