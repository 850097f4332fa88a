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
from typing import Dict, List

from yolov5_dattn import patching
from yolov5_dattn.errors import UserError

# the ultralytics releases this hook is tested with: [first, first-not-covered)
TESTED_RANGE = ("8.4.190", "8.5")

BASE_SET = "_yolov5_dattn_base_modules"
REPEAT_SET = "_yolov5_dattn_repeat_modules"
C3K2_MAP = "_yolov5_dattn_c3k2_index"  # class -> index of c3k in its parse_model args
AIFI_SET = "_yolov5_dattn_aifi_modules"
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


def _classes() -> Dict[str, dict]:
    """name -> {cls, base, repeat} for every block we register."""
    from . import blocks
    table = {
        "Bottleneck_DAttention": (True, False),
        "C2f_DAttention": (True, True),
        "C3k_DAttention": (True, True),
        "C3k2_DAttention": (True, True),
        "C2PSA_DAttention": (True, True),
        "AIFI_DAttention": (False, False),
    }
    return {name: {"cls": getattr(blocks, name), "base": base, "repeat": repeat}
            for name, (base, repeat) in table.items()}


def register(tasks: ModuleType = None) -> bool:
    """Install the hook into `tasks` (default `ultralytics.nn.tasks`). Idempotent: returns False when it
    was installed already. Raises UnsupportedUltralytics (parse_model's shape) or UserError (a name of ours
    that ultralytics defines itself)."""
    if tasks is None:
        import ultralytics.nn.tasks as tasks
    if patching.is_patched(tasks, "parse_model", HOOK_WHY):
        return False
    from yolov5_dattn.nn.dattention import DAttention
    from .blocks import AIFI_DAttention, C3k2_DAttention

    patched = rewrite_parse_model(tasks)  # before any change: a refusal leaves ultralytics untouched
    classes = _classes()
    for name, entry in classes.items():
        held = vars(tasks).get(name)
        if held is not None and held is not entry["cls"] and not patching.is_patched(tasks, name, REGISTER_WHY):
            raise UserError(f"yolov5_dattn: ultralytics {ultralytics_version()} defines {name} itself "
                            f"({getattr(held, '__module__', '?')}); this plugin's block of that name would hide it")
    for name, entry in classes.items():
        patching.patch(tasks, name, entry["cls"], why=REGISTER_WHY)
    patching.patch(tasks, "DAttention", DAttention, why=REGISTER_WHY)  # `[-1, 1, DAttention, ...]` resolves too
    patching.patch(tasks, BASE_SET, {e["cls"] for e in classes.values() if e["base"]}, why=SETS_WHY)
    patching.patch(tasks, REPEAT_SET, {e["cls"] for e in classes.values() if e["repeat"]}, why=SETS_WHY)
    patching.patch(tasks, C3K2_MAP, {tasks.C3k2: 3, C3k2_DAttention: 4}, why=SETS_WHY)
    patching.patch(tasks, AIFI_SET, {tasks.AIFI, AIFI_DAttention}, why=SETS_WHY)
    patching.patch(tasks, "parse_model", patched, why=HOOK_WHY)
    return True
