"""The hook: teaches YOLOv5's `parse_model` our modules without editing YOLOv5's files.

`parse_model` (yolov5/models/yolo.py) resolves YAML module names with `eval` in its module's globals
and decides how to build each layer by membership in two set literals that it rebuilds on every
call: modules taking `(c1, c2, *args)` (channels inserted, c2 scaled by width_multiple) and, among
those, modules taking the repeat count as third argument (like C3). We recompile `parse_model` with
both literals extended by a registry set that lives here, so later registrations need no recompile.

The same rewrite removes parse_model's three `eval` calls (`eval(act)`, `eval(m) if isinstance(m, str)
else m`, `eval(a) if isinstance(a, str) else a`): a model dict may come from a checkpoint anyone wrote,
so each becomes a call of `yolov5_dattn.yolov5.safe_yaml.resolve`, which resolves names from explicit
namespaces and literals with `ast.literal_eval` and never runs YAML text. A parse_model left with any
`eval` is refused (UnsupportedYOLOv5). This file is the only code that knows parse_model's internals.
"""
import ast
import functools
import importlib.util
import inspect
import os
import sys
from types import ModuleType
from typing import Optional

from torch import nn

CHANNEL_SET = "_yolov5_dattn_channel_modules"  # names injected into yolo.py's globals
REPEAT_SET = "_yolov5_dattn_repeat_modules"
RESOLVE = "_yolov5_dattn_resolve"  # safe_yaml.resolve bound to that yolo module
EVAL_ROLES = ("a", "act", "m")  # the variables YOLOv5's parse_model evaluates


class UnsupportedYOLOv5(RuntimeError):
    """The installed YOLOv5's parse_model does not have the shape this hook rewrites."""


def _yolov5_version() -> str:
    try:
        from importlib.metadata import version
        return version("yolov5")
    except Exception:  # a git clone has no distribution metadata
        return "unknown (not the pip package)"


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
        raise UnsupportedYOLOv5(f"yolov5_dattn: cannot read the source of parse_model of the installed yolov5 "
                                f"{_yolov5_version()} ({e}): install yolov5==7.0.14 from source files") from None
    tree = ast.parse("".join(lines))
    ast.increment_lineno(tree, first_line - 1)
    transformer = _ExtendModuleSets()
    tree = ast.fix_missing_locations(transformer.visit(tree))
    if sorted(transformer.extended) != sorted([CHANNEL_SET, REPEAT_SET]):
        raise UnsupportedYOLOv5(
            f"yolov5_dattn: the installed yolov5 {_yolov5_version()} has a parse_model this plugin does not "
            f"recognise (expected the two `m in {{... C3 ...}}` sets of 7.0.x): install yolov5==7.0.14")
    if safe:
        no_eval = _ReplaceEval()
        tree = ast.fix_missing_locations(no_eval.visit(tree))
        left = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in ("eval", "exec")]
        if sorted(set(no_eval.replaced)) != sorted(EVAL_ROLES) or left:
            raise UnsupportedYOLOv5(
                f"yolov5_dattn: the installed yolov5 {_yolov5_version()} has a parse_model whose eval calls this "
                f"plugin does not recognise (expected eval(act), eval(m), eval(a) of 7.0.x): install "
                f"yolov5==7.0.14")
        setattr(yolo, RESOLVE, functools.partial(safe_yaml.resolve, yolo=yolo,
                                                 local_names=frozenset(original.__code__.co_varnames)))
    namespace = {}
    exec(compile(tree, original.__code__.co_filename, "exec"), vars(yolo), namespace)
    patched = namespace["parse_model"]
    patched.__wrapped__ = original
    patched._yolov5_dattn = True
    return patched


def _default_yolo() -> ModuleType:
    import yolov5.models.yolo as yolo
    return yolo


def _flat_models_is_pip_package() -> bool:
    """True unless a top-level `models` other than the pip package's folder is importable.

    Inside a git clone of YOLOv5 (or any project with its own `models` package, found first on
    sys.path), `models` is that project's: aliasing it to the pip package would hand the clone's
    `from models.yolo import Model` the wrong classes.
    """
    import yolov5.models
    try:
        spec = importlib.util.find_spec("models")
    except (ImportError, ValueError):  # a half-initialised `models` in sys.modules without a spec
        return False
    if spec is None or not spec.submodule_search_locations:
        return spec is None
    ours = {os.path.realpath(p) for p in yolov5.models.__path__}
    return {os.path.realpath(p) for p in spec.submodule_search_locations} <= ours


def _alias_flat_imports() -> None:
    """yolov5 puts its folder on sys.path and `attempt_load` does `from models.yolo import ...`, which
    would load a second copy of yolo.py whose classes never match ours; point `models.*` at ours.
    Skipped when `models` is someone else's (a git clone of YOLOv5 registers its own via the patch)."""
    if not _flat_models_is_pip_package():
        return
    for name, module in list(sys.modules.items()):
        if name == "yolov5.models" or name.startswith("yolov5.models."):
            sys.modules.setdefault(name[len("yolov5."):], module)


# name -> (module class, takes repeats); shared by every hooked yolo module
_registered = {}
_hooked = []


def register_module(module: Optional[type] = None, *, channels: bool = True, repeats: bool = False,
                    name: Optional[str] = None):
    """Make a module usable by name in YOLOv5 YAMLs, like YOLOv5's own.

    Args:
        module: an nn.Module class.
        channels: True if its constructor starts `(c1, c2, ...)`: parse_model inserts the input channels c1
            and scales the YAML's c2 by width_multiple (rounded to a multiple of 8), as for Conv/C3.
            False: the YAML's arguments are passed unchanged and the output keeps the input's channels.
        repeats: True if the third argument is a repeat count n (as C3): the YAML's `number` is
            depth-scaled and passed as n instead of stacking n copies.
        name: the name YAMLs use; defaults to the class name.
    Returns the class, so it can be used as a decorator, bare (`@register_module`) or with arguments
    (`@register_module(repeats=True)`).
    """
    if module is None:
        return lambda cls: register_module(cls, channels=channels, repeats=repeats, name=name)
    if not (isinstance(module, type) and issubclass(module, nn.Module)):
        raise TypeError(f"register_module expects an nn.Module class, got {module!r}")
    _registered[name or module.__name__] = (module, channels, repeats)
    for yolo in _hooked:
        _publish(yolo)
    return module


def _publish(yolo: ModuleType) -> None:
    channel, repeat = set(), set()
    for name, (module, channels, repeats) in _registered.items():
        setattr(yolo, name, module)
        if channels:
            channel.add(module)
        if channels and repeats:
            repeat.add(module)
    setattr(yolo, CHANNEL_SET, channel)
    setattr(yolo, REPEAT_SET, repeat)


def register(yolo: Optional[ModuleType] = None) -> None:
    """Install the hook into `yolo` (default: the pip package's `yolov5.models.yolo`). Idempotent.

    For a git clone of YOLOv5, pass the clone's own `models.yolo` module.
    """
    from .blocks import Bottleneck_DAttention, C3_DAttention
    from yolov5_dattn.nn.dattention import DAttention

    if not _registered:
        register_module(C3_DAttention, repeats=True)
        register_module(Bottleneck_DAttention)
        register_module(DAttention, channels=False)  # YAML: [-1, 1, DAttention, [C, [h, w]]]
    if yolo is None:
        yolo = _default_yolo()
        _alias_flat_imports()
    if not getattr(yolo.parse_model, "_yolov5_dattn", False):
        yolo.parse_model = _patched_parse_model(yolo)
    if yolo not in _hooked:
        _hooked.append(yolo)
    _publish(yolo)
