"""Model YAMLs without `eval`: the strings a YOLOv5 model dict may hold, resolved from explicit namespaces.

YOLOv5's `parse_model` passes three kinds of YAML strings to `eval()`: the `activation`, each layer's
module name and each string argument. A model dict comes from `--cfg` or from a checkpoint's
`model.yaml` (plain data anyone can write), so the hooked parse_model (`yolov5_dattn.hosts.yolov5.registry`) resolves
them here instead, and nothing in them is ever run:

- module: the name of an nn.Module class in the hooked yolo module's namespace (YOLOv5's classes from
  models/common.py, experimental.py and yolo.py, which yolo.py star-imports, plus every module registered
  with `register_module`), or `nn.<Name>` for a public torch.nn module class. An unknown plain name raises
  NameError and an unknown `nn.<Name>` AttributeError, as YOLOv5's `eval` did (preflight turns both into
  "unknown module ..., did you mean ...").
- argument: a Python literal (`ast.literal_eval`: numbers, strings, lists, True/False/None, ...), `nc` or
  `anchors` (the dict's own values), or a plain word that names nothing in parse_model's scope, which stays
  a string as in YOLOv5 (`nearest`). A word that names a Python object (`os`, `print`, `ch`) and every other
  expression are refused. Non-string arguments are passed on unchanged.
- activation: `nn.<Name>(literal, ..., key=literal)`, e.g. `nn.SiLU()` or `nn.LeakyReLU(0.1)`.

Anything else raises `UnsafeModelYAML`, a `UserError` naming the key or layer.
"""
import ast
import builtins
from types import ModuleType
from typing import Any, Callable, Collection, Dict, Optional

from torch import nn

from yolov5_dattn.errors import UserError

HINT_ARG = "arguments may be literals (numbers, strings, lists, True/False/None), nc or anchors"
HINT_MODULE = "use a YOLOv5 module name (Conv, C3, ...), nn.<Module> or a registered one (C3_DAttention)"
HINT_ACT = "write nn.<Activation>(literal arguments), e.g. nn.SiLU() or nn.LeakyReLU(0.1)"


class UnsafeModelYAML(UserError):
    """A model dict string that would need `eval` (code) to mean anything; `detail` is the message without
    the `source` prefix, so callers can name the file instead."""

    def __init__(self, detail: str, source: str = "model YAML"):
        super().__init__(f"{source} {detail}")
        self.detail = detail


def _show(value: Any, limit: int = 80) -> str:
    """repr of a YAML value, shortened so an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _expression(text: str) -> Optional[ast.expr]:
    """The parsed expression of `text` (leading/trailing blanks ignored, as eval does), None if not one."""
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _literal(node_or_text: Any) -> Any:
    """`ast.literal_eval`, raising ValueError for everything it refuses (also nesting/size abuse)."""
    try:
        return ast.literal_eval(node_or_text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise ValueError(str(e)) from None


def torch_nn_module(name: str) -> Optional[type]:
    """The public torch.nn module class `nn.<name>`, else None."""
    obj = getattr(nn, name, None) if not name.startswith("_") else None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def module_namespace(yolo: ModuleType) -> Dict[str, type]:
    """Names a YAML may use for a module (without the `nn.` ones): the nn.Module classes of `yolo`'s globals."""
    return {k: v for k, v in vars(yolo).items() if isinstance(v, type) and issubclass(v, nn.Module)}


def resolve_module(m: Any, namespace: Dict[str, type], where: str) -> type:
    """The nn.Module class a layer's module entry `m` names (see the module docstring).

    Raises: NameError / AttributeError for an unknown name / `nn.` name; UnsafeModelYAML for anything
    that is not a name at all.
    """
    if isinstance(m, type) and issubclass(m, nn.Module):  # a dict built in Python may hold the class itself
        return m
    node = _expression(m) if isinstance(m, str) else None
    if isinstance(node, ast.Name):
        if node.id not in namespace:
            raise NameError(f"name {node.id!r} is not defined", name=node.id)
        return namespace[node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nn":
        cls = torch_nn_module(node.attr)
        if cls is None:
            raise AttributeError(f"torch.nn has no module class {node.attr!r}", name=node.attr, obj=nn)
        return cls
    raise UnsafeModelYAML(f"{where}: module {_show(m)} is not a module name: {HINT_MODULE}")


def resolve_arg(a: Any, values: Dict[str, Any], in_scope: Callable[[str], bool], where: str) -> Any:
    """A layer argument: a literal's value, `values[name]` for nc/anchors, a free word as the string itself.

    Args:
        a: the YAML entry (non-strings are returned unchanged).
        values: the names an argument may use and their values ({'nc': 80, 'anchors': [...]}).
        in_scope: True for a word that would name a Python object where YOLOv5 evaluated it (refused).
        where: 'layer 3 (C3) argument 1', for the error.
    """
    if not isinstance(a, str):
        return a
    try:
        return _literal(a.strip())
    except ValueError:
        pass
    node = _expression(a)
    if isinstance(node, ast.Name):
        if node.id in values:
            return values[node.id]
        if not in_scope(node.id):
            return a  # YOLOv5 keeps a word that names nothing as a string ('nearest')
        raise UnsafeModelYAML(f"{where} {_show(a)} names a Python object, not a value: {HINT_ARG}")
    raise UnsafeModelYAML(f"{where} {_show(a)} is an expression, which is not evaluated: {HINT_ARG}")


def build_activation(act: Any, where: str = "activation") -> nn.Module:
    """The module of a YAML `activation` string `nn.<Name>(literal, ..., key=literal)`; UnsafeModelYAML else."""
    node = _expression(act) if isinstance(act, str) else None
    cls, args, kwargs = None, [], {}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "nn" and all(k.arg is not None for k in node.keywords)):
        try:
            args = [_literal(x) for x in node.args]
            kwargs = {k.arg: _literal(k.value) for k in node.keywords}
            cls = torch_nn_module(node.func.attr)
        except ValueError:
            cls = None
    if cls is None:
        raise UnsafeModelYAML(f"{where} {_show(act)} is not allowed: {HINT_ACT}")
    try:
        return cls(*args, **kwargs)
    except Exception as e:  # wrong arguments for that class
        raise UnsafeModelYAML(f"{where} {_show(act)} cannot be built: {' '.join(str(e).split())}") from None


def _layer_where(scope: Dict[str, Any]) -> str:
    m = scope.get("m")
    name = m.__name__ if isinstance(m, type) else str(m)
    return f"layer {scope.get('i')} ({name}) argument {scope.get('j')}"


def scope_checker(yolo: ModuleType, local_names: Collection[str]) -> Callable[[str], bool]:
    """True for a word YOLOv5's `eval` inside parse_model would have resolved: its locals, yolo's globals,
    builtins."""
    return lambda name: name in local_names or name in vars(yolo) or hasattr(builtins, name)


def resolve(role: str, value: Any, scope: Dict[str, Any], *, yolo: ModuleType, local_names: Collection[str]) -> Any:
    """What the hooked parse_model calls where YOLOv5 had `eval(act)`, `eval(m)` or `eval(a)`.

    Args:
        role: the variable YOLOv5 evaluated: 'act', 'm' or 'a'.
        value: its value (a string from the YAML, or for 'm'/'a' anything a Python-built dict holds).
        scope: parse_model's locals() (gives i, j, m, nc, anchors).
        yolo: the hooked yolo module (its globals hold the module names).
        local_names: parse_model's local variable names (words that must not be arguments).
    """
    if role == "act":
        return build_activation(value)
    if role == "m":
        return resolve_module(value, module_namespace(yolo), f"layer {scope.get('i')}")
    if role == "a":
        values = {"nc": scope.get("nc"), "anchors": scope.get("anchors")}
        return resolve_arg(value, values, scope_checker(yolo, local_names), _layer_where(scope))
    raise ValueError(f"unknown role {role!r}")


def check_model_dict(d: Any, source: str = "model YAML", yolo: Optional[ModuleType] = None) -> None:
    """Resolve every string of model dict `d` as the hooked parse_model will, without building the model.

    Used on a checkpoint's `model.yaml` before any work starts, so training from it cannot fail (or run
    anything) halfway. Raises UnsafeModelYAML prefixed with `source` (e.g. 'checkpoint last.pt: model.yaml').
    """
    if yolo is None:
        import yolov5.models.yolo as yolo
    if not isinstance(d, dict) or not isinstance(d.get("backbone"), list) or not isinstance(d.get("head"), list):
        raise UnsafeModelYAML("is not a YOLOv5 model dict (it needs backbone and head lists)", source)
    parse_model = getattr(yolo.parse_model, "__wrapped__", yolo.parse_model)
    in_scope = scope_checker(yolo, parse_model.__code__.co_varnames)
    namespace = module_namespace(yolo)
    if d.get("activation"):
        try:
            build_activation(d["activation"])
        except UnsafeModelYAML as e:
            raise UnsafeModelYAML(e.detail, source) from None
    values = {"nc": d.get("nc"), "anchors": d.get("anchors")}
    for i, layer in enumerate(d["backbone"] + d["head"]):
        if not (isinstance(layer, (list, tuple)) and len(layer) == 4 and isinstance(layer[3], (list, tuple))):
            raise UnsafeModelYAML(f"layer {i} {_show(layer)} is not [from, number, module, [args]]", source)
        m, args = layer[2], layer[3]
        try:
            cls = resolve_module(m, namespace, f"layer {i}")
            for j, a in enumerate(args):
                resolve_arg(a, values, in_scope, f"layer {i} ({cls.__name__}) argument {j}")
        except (NameError, AttributeError):
            raise UnsafeModelYAML(f"layer {i} uses unknown module {_show(m)}: {HINT_MODULE}", source) from None
        except UnsafeModelYAML as e:
            raise UnsafeModelYAML(e.detail, source) from None
