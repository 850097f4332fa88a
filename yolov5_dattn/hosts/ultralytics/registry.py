"""Teaches ultralytics' `parse_model` our blocks without editing ultralytics' files.

`ultralytics.nn.tasks.parse_model` resolves a YAML's module names through `globals()[m]` of `tasks` and decides
how to build a layer by class identity: membership in two local frozensets rebuilt on every call,
`base_modules` (channels inserted, c2 scaled by width and capped by max_channels) and `repeat_modules` (the
depth-scaled repeat count passed as third argument), plus special cases `m is C3k2` (for the m/l/x scales
`args[3:4] = [True]`: c3k at C3k2's own index) and `m is AIFI` (input channels prepended).

We recompile parse_model (same file name and line numbers, `patching.recompile`) with
- both frozenset literals extended by `*<our set>` (sets that live in `tasks`' globals, updated in place);
- `m is C3k2` turned into `m in <C3k2-like map>` and its `args[3:4]` into `args[i:i + 1]` with `i` the c3k
  index of that class (4 for `C3k2_DAttention`, whose fmapsize comes before c3k);
- `m is AIFI` turned into `m in <AIFI-like set>`.
Our classes are published into `tasks`' globals under their names. A parse_model without exactly these
constructs is refused with one line naming the installed ultralytics version (`UnsupportedUltralytics`).
Every change goes through `yolov5_dattn.patching`.
"""
import ast
from types import ModuleType
from typing import List, Optional

from yolov5_dattn import patching
from yolov5_dattn.core.registry import Registry, RegistryConflict
from yolov5_dattn.errors import UserError
from yolov5_dattn.patching import where_defined

__all__ = ["REGISTRY", "TESTED_RANGE", "RegistryConflict", "UnsupportedUltralytics", "in_tested_range",
           "register", "register_module", "rewrite_parse_model", "ultralytics_version"]

# the ultralytics releases this hook is tested with: [first, first-not-covered)
TESTED_RANGE = ("8.4.190", "8.5")

BASE_SET = "_yolov5_dattn_base_modules"
REPEAT_SET = "_yolov5_dattn_repeat_modules"
C3K2_MAP = "_yolov5_dattn_c3k2_index"  # class -> index of c3k in its parse_model args
AIFI_SET = "_yolov5_dattn_aifi_modules"
C3K2_INDEX = 4  # C3k2_DAttention's c3k argument: its fmapsize comes before c3k
HOOK_WHY = "ultralytics' parse_model learns the DAttention blocks (width, depth, max_channels, c3k, AIFI)"
SETS_WHY = "the DAttention blocks' classes, for the rewritten parse_model's membership tests"
REGISTER_WHY = "a DAttention block, usable by name in ultralytics model YAMLs"


class UnsupportedUltralytics(UserError):
    """The installed ultralytics' parse_model does not have the shape this hook rewrites."""


def ultralytics_version() -> str:
    """The installed ultralytics' version string."""
    import ultralytics
    return getattr(ultralytics, "__version__", "unknown")


def _refuse(what: str) -> UnsupportedUltralytics:
    return UnsupportedUltralytics(
        f"yolov5_dattn: ultralytics {ultralytics_version()} has a parse_model this plugin does not recognise "
        f"({what}): install ultralytics>={TESTED_RANGE[0]},<{TESTED_RANGE[1]}")


def in_tested_range(version: str) -> bool:
    """True when `version` ('8.4.190') lies in TESTED_RANGE."""
    def key(v: str):
        return tuple(int(p) if p.isdigit() else 0 for p in v.split(".")[:3])
    return key(TESTED_RANGE[0]) <= key(version) < key(TESTED_RANGE[1])


def _is_name(node, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _m_is(node, cls: str) -> bool:
    """`node` is the comparison `m is <cls>`."""
    return (isinstance(node, ast.Compare) and _is_name(node.left, "m") and len(node.ops) == 1
            and isinstance(node.ops[0], ast.Is) and _is_name(node.comparators[0], cls))


def _m_in(name: str, where: ast.AST) -> ast.Compare:
    node = ast.Compare(left=ast.Name(id="m", ctx=ast.Load()), ops=[ast.In()],
                       comparators=[ast.Name(id=name, ctx=ast.Load())])
    return ast.copy_location(node, where)


class _Rewrite(ast.NodeTransformer):
    """The three edits of the module docstring; records what it found so the caller can refuse a mismatch."""

    def __init__(self):
        self.sets: List[str] = []
        self.c3k2 = 0
        self.c3k_slices = 0
        self.aifi = 0

    def visit_Assign(self, node):
        self.generic_visit(node)
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and \
                node.targets[0].id in ("base_modules", "repeat_modules"):
            value = node.value
            if (isinstance(value, ast.Call) and _is_name(value.func, "frozenset") and len(value.args) == 1
                    and isinstance(value.args[0], ast.Set)):
                ours = BASE_SET if node.targets[0].id == "base_modules" else REPEAT_SET
                value.args[0].elts.append(ast.copy_location(
                    ast.Starred(value=ast.Name(id=ours, ctx=ast.Load()), ctx=ast.Load()), value.args[0]))
                self.sets.append(node.targets[0].id)
        return node

    def visit_If(self, node):
        if _m_is(node.test, "C3k2"):
            node.test = _m_in(C3K2_MAP, node.test)
            self.c3k2 += 1
            for sub in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                if (isinstance(sub, ast.Subscript) and _is_name(sub.value, "args") and isinstance(sub.slice, ast.Slice)
                        and isinstance(sub.slice.lower, ast.Constant) and sub.slice.lower.value == 3
                        and isinstance(sub.slice.upper, ast.Constant) and sub.slice.upper.value == 4):
                    index = ast.Subscript(value=ast.Name(id=C3K2_MAP, ctx=ast.Load()),
                                          slice=ast.Name(id="m", ctx=ast.Load()), ctx=ast.Load())
                    sub.slice.lower = ast.copy_location(index, sub.slice.lower)
                    sub.slice.upper = ast.copy_location(
                        ast.BinOp(left=index, op=ast.Add(), right=ast.Constant(1)), sub.slice.upper)
                    self.c3k_slices += 1
        elif _m_is(node.test, "AIFI"):
            node.test = _m_in(AIFI_SET, node.test)
            self.aifi += 1
        self.generic_visit(node)
        return node


def rewrite_parse_model(tasks: ModuleType):
    """`tasks.parse_model` recompiled with the edits of the module docstring (its own file and line numbers).

    Raises UnsupportedUltralytics when its source is unreadable or lacks one of the constructs."""
    original = tasks.parse_model
    found = {}

    def edit(tree):
        rewrite = _Rewrite()
        tree = rewrite.visit(tree)
        found.update(sets=sorted(rewrite.sets), c3k2=rewrite.c3k2, slices=rewrite.c3k_slices, aifi=rewrite.aifi)
        return tree

    try:
        patched = patching.recompile(original, edit)
    except (OSError, TypeError) as e:
        raise UnsupportedUltralytics(f"yolov5_dattn: cannot read the source of parse_model of ultralytics "
                                     f"{ultralytics_version()} ({e}): install ultralytics from its wheel") from None
    if found.get("sets") != ["base_modules", "repeat_modules"]:
        raise _refuse("expected the frozensets base_modules and repeat_modules")
    if (found["c3k2"], found["slices"]) != (1, 1):
        raise _refuse("expected one `if m is C3k2:` setting args[3:4] = [True]")
    if found["aifi"] != 1:
        raise _refuse("expected one `elif m is AIFI:` branch")
    return patched


def _host_owner(name: str) -> Optional[str]:
    """Where the hooked `tasks` module defines `name` itself (a class of ultralytics'), if it does."""
    tasks = _hooked[0] if _hooked else None
    if tasks is None or name not in vars(tasks) or patching.is_patched(tasks, name, REGISTER_WHY):
        return None
    return where_defined(vars(tasks)[name])


def _publish(registry: Registry) -> None:
    """Put every entry into the hooked `tasks`' globals and its parse_model sets (updated in place)."""
    for tasks in _hooked:
        if not patching.is_patched(tasks, BASE_SET, SETS_WHY):
            continue  # `register` is still checking our names: it publishes them all once they pass
        for e in registry:
            current = patching.patched(tasks, e.name, REGISTER_WHY)
            if current is not None and current.replacement is e.cls:
                continue
            if current is not None:
                patching.undo(where=lambda c: c is current)
            patching.patch(tasks, e.name, e.cls, why=REGISTER_WHY)
        getattr(tasks, BASE_SET).clear()
        getattr(tasks, BASE_SET).update(e.cls for e in registry if e.channels)
        getattr(tasks, REPEAT_SET).clear()
        getattr(tasks, REPEAT_SET).update(e.cls for e in registry if e.channels and e.repeats)


# YAML name -> Entry for ultralytics' parse_model (ours, and any a user registers: `register_module`)
REGISTRY = Registry("ultralytics", host_owner=_host_owner, on_change=_publish)
_hooked: List[ModuleType] = []


def register_module(cls: Optional[type] = None, *, name: Optional[str] = None, force: bool = False,
                    channels: bool = True, repeats: bool = False):
    """Make an nn.Module class usable by name in ultralytics model YAMLs (`REGISTRY.register_module`).

    channels: parse_model inserts the input channels and scales c2 (width, max_channels), as for `base_modules`;
    repeats: the depth-scaled repeat count is passed as the third argument, as for `repeat_modules`. Returns the
    class (usable as a decorator). RegistryConflict for a name ultralytics or another class holds (unless force).
    """
    return REGISTRY.register_module(cls, name=name, force=force, channels=channels, repeats=repeats)


def _register_ours() -> None:
    """Our blocks, with how parse_model builds each (C3k2's c3k index, AIFI's input channels)."""
    from yolov5_dattn.nn.dattention import DAttention
    from . import blocks
    for name, channels, repeats, note in (
            ("Bottleneck_DAttention", True, False, ""),
            ("C2f_DAttention", True, True, ""),
            ("C3k_DAttention", True, True, ""),
            ("C3k2_DAttention", True, True, f"c3k at args[{C3K2_INDEX}] for scales m/l/x"),
            ("C2PSA_DAttention", True, True, ""),
            ("AIFI_DAttention", False, False, "input channels prepended (as AIFI)")):
        REGISTRY.register_module(getattr(blocks, name), channels=channels, repeats=repeats, note=note)
    REGISTRY.register_module(DAttention, channels=False)  # `[-1, 1, DAttention, ...]` resolves too


def register(tasks: ModuleType = None) -> bool:
    """Install the hook into `tasks` (default `ultralytics.nn.tasks`). Idempotent: returns False when it
    was installed already. Raises UnsupportedUltralytics (parse_model's shape) or RegistryConflict (a name of
    ours that ultralytics defines itself), before changing anything."""
    if tasks is None:
        import ultralytics.nn.tasks as tasks
    if patching.is_patched(tasks, "parse_model", HOOK_WHY):
        return False
    from .blocks import AIFI_DAttention, C3k2_DAttention

    patched = rewrite_parse_model(tasks)  # before any change: a refusal leaves ultralytics untouched
    _hooked[:] = [tasks]
    if not len(REGISTRY):
        try:
            _register_ours()
        except RegistryConflict:  # nothing was published yet: leave ultralytics and the registry as they were
            _hooked.clear()
            for e in REGISTRY.entries():
                REGISTRY.remove(e.name, notify=False)
            raise
    for attr in (BASE_SET, REPEAT_SET):
        patching.patch(tasks, attr, set(), why=SETS_WHY)
    patching.patch(tasks, C3K2_MAP, {tasks.C3k2: 3, C3k2_DAttention: C3K2_INDEX}, why=SETS_WHY)
    patching.patch(tasks, AIFI_SET, {tasks.AIFI, AIFI_DAttention}, why=SETS_WHY)
    _publish(REGISTRY)
    patching.patch(tasks, "parse_model", patched, why=HOOK_WHY)
    return True
