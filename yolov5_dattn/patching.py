"""The one way this plugin changes a host library's code at run time.

`patch(owner, name, replacement, why=...)` sets `owner.name` (a module global, a class attribute) and
records it in a journal: what was there before, what replaced it, and why. Every change any host
integration makes goes through here, so

- there is one "already patched" test (`is_patched`): patching twice with the same `why` is a no-op,
  while a different patch may wrap the current one (they stack, each undone in turn);
- the changes can be listed (`changes()`, shown by `yolov5-dattn changes`) and undone (`undo()`),
  which tests use to compare the host with and without the plugin;
- a function imported by name into other modules (`from utils.general import check_font`) is
  replaced there too (`also=`), so modules loaded later and earlier see the same code;
- each change remembers the step that made it (`applying(step)`), so a listing can say which documented
  step of the host integration it belongs to.

`temporarily(...)` is the same change for the duration of one block (undone on exit). `override(...)` gives
one host module its own view of a library module with a few names replaced (`torch.load` as seen from
`train.py` only). `recompile(function, edit)` and `replace_line(function, old, new)` are for the few
changes that must edit code inside a host function: they compile the edited source under the host's own
file name and line numbers, so tracebacks still point at the host's lines.

Host-agnostic: nothing here knows YOLOv5.
"""
import ast
import contextlib
import contextvars
import inspect
import sys
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

_MISSING = object()
_step: contextvars.ContextVar = contextvars.ContextVar("patching_step", default="")


@dataclass
class Change:
    """One recorded change: `owner.name` was `original` (or absent) and is now `replacement`."""
    owner: Any
    name: str
    original: Any
    replacement: Any
    why: str
    also: List[types.ModuleType] = field(default_factory=list)
    step: str = ""  # the `applying(step)` block it was made in ('' outside one)

    @property
    def where(self) -> str:
        """'yolov5.utils.general.check_font', 'yolov5.models.yolo.Segment.__init__'."""
        owner = self.owner
        if isinstance(owner, types.ModuleType):
            return f"{owner.__name__}.{self.name}"
        return f"{getattr(owner, '__module__', '?')}.{getattr(owner, '__qualname__', owner)}.{self.name}"

    @property
    def added(self) -> bool:
        """True when the name did not exist before (a new global such as a registered module)."""
        return self.original is _MISSING


_journal: List[Change] = []


def _current(owner: Any, name: str) -> Any:
    # a class attribute is read from the class's own dict: getattr would return a bound or inherited value
    if isinstance(owner, type):
        return owner.__dict__.get(name, _MISSING)
    return getattr(owner, name, _MISSING)


def _live(change: Change) -> bool:
    """True while `change` is in effect: its replacement is current, or wrapped by later patches that are."""
    current = _current(change.owner, change.name)
    later = False
    for c in _journal:
        if c is change:
            later = True
        if later and c.owner is change.owner and c.name == change.name and c.replacement is current:
            return True
    return False


def _find(owner: Any, name: str, why: Optional[str]) -> Optional[Change]:
    return next((c for c in reversed(_journal) if c.owner is owner and c.name == name
                 and (why is None or c.why == why) and _live(c)), None)


def is_patched(owner: Any, name: str, why: Optional[str] = None) -> bool:
    """True if `owner.name` holds a replacement made by `patch` (with reason `why`, if given), directly or
    wrapped by later patches."""
    return _find(owner, name, why) is not None


def patched(owner: Any, name: str, why: Optional[str] = None) -> Optional[Change]:
    """The change in effect on `owner.name` (the newest, or the one made with `why`), or None."""
    return _find(owner, name, why)


@contextlib.contextmanager
def applying(step: str) -> Iterator[None]:
    """Changes made within the block are recorded as made by `step` (a name from the host's list of changes)."""
    token = _step.set(step)
    try:
        yield
    finally:
        _step.reset(token)


def patch(owner: Any, name: str, replacement: Any, *, why: str,
          also: Iterable[types.ModuleType] = (), step: Optional[str] = None) -> bool:
    """Set `owner.name = replacement` and record it; returns False (and changes nothing) when the same
    change (`why`) is in effect already.

    Args:
        owner: the module or class to change.
        name: the attribute.
        replacement: the new value; a function defined for the patch (a closure) gets `__wrapped__` = the
            original, unless it has one already (`functools.wraps`).
        why: one line saying what breaks without it; also the change's identity for idempotence.
        also: other modules that hold the original under the same name (imported by name); each that
            still holds the original gets the replacement too.
        step: the step recorded with the change (default: that of the enclosing `applying` block).
    """
    if is_patched(owner, name, why):
        return False
    original = _current(owner, name)
    # a function made for this patch (a closure) records what it wraps; a shared module-level one is left as is
    if (isinstance(replacement, types.FunctionType) and original is not _MISSING
            and "<locals>" in replacement.__qualname__ and "__wrapped__" not in replacement.__dict__):
        replacement.__wrapped__ = original
    elsewhere = [m for m in dict.fromkeys(also) if m is not owner and original is not _MISSING
                 and getattr(m, name, _MISSING) is original]
    for module in elsewhere:
        setattr(module, name, replacement)
    setattr(owner, name, replacement)
    _journal.append(Change(owner, name, original, replacement, why, elsewhere, _step.get() if step is None else step))
    return True


def _restore(change: Change) -> None:
    if _current(change.owner, change.name) is change.replacement:
        if change.added:
            delattr(change.owner, change.name)
        else:
            setattr(change.owner, change.name, change.original)
    else:  # wrapped since: the next change up the stack now wraps what this one wrapped
        for c in _journal:
            if c.owner is change.owner and c.name == change.name and c.original is change.replacement:
                c.original = change.original
    for module in change.also:
        if getattr(module, change.name, _MISSING) is change.replacement:
            setattr(module, change.name, change.original)


def changes(owner_prefix: Optional[str] = None) -> List[Change]:
    """The changes in place, oldest first; only those whose `where` starts with `owner_prefix` if given."""
    return [c for c in _journal if owner_prefix is None or c.where.startswith(owner_prefix)]


def undo(count: Optional[int] = None, *, where: Optional[Callable[[Change], bool]] = None) -> int:
    """Undo changes, newest first: all of them, the last `count`, or those `where(change)` selects.
    Returns how many were undone. Undoing a change that a later one wraps leaves the later one in place
    (it then wraps what the undone one had wrapped, once it is undone itself)."""
    done = 0
    for change in reversed(list(_journal)):
        if count is not None and done >= count:
            break
        if where is not None and not where(change):
            continue
        _restore(change)
        _journal.remove(change)
        done += 1
    return done


@contextlib.contextmanager
def temporarily(owner: Any, name: str, replacement: Any, *, why: str,
                step: Optional[str] = None) -> Iterator[None]:
    """`patch` for the duration of the block only (undone on exit, also when the block raises)."""
    if not patch(owner, name, replacement, why=why, step=step):
        yield
        return
    change = _journal[-1]
    try:
        yield
    finally:
        undo(where=lambda c: c is change)


class ModuleView(types.ModuleType):
    """A module as one host module sees it: every attribute is the real module's except `overrides`."""

    def __init__(self, real: types.ModuleType, overrides: Dict[str, Any]):
        super().__init__(real.__name__)
        self.__dict__["_real"], self.__dict__["_overrides"] = real, dict(overrides)

    def __getattr__(self, name):
        overrides = self.__dict__.get("_overrides", {})
        if name in overrides:
            return overrides[name]
        return getattr(self.__dict__["_real"], name)


def override(owner: types.ModuleType, module_name: str, attribute: str, value: Any, *, why: str) -> bool:
    """Make `owner` (a host module) see `<module_name>.<attribute>` as `value`, leaving the library itself
    alone: `owner.<module_name>` becomes a `ModuleView` of what it was. `attribute` may be dotted one level
    ('onnx.export'). Each override is its own change (they stack). Returns `patch`'s answer."""
    if is_patched(owner, module_name, why):
        return False
    current = getattr(owner, module_name)
    if "." in attribute:
        sub, attr = attribute.split(".", 1)
        value = ModuleView(getattr(current, sub), {attr: value})
        attribute = sub
    return patch(owner, module_name, ModuleView(current, {attribute: value}), why=why)


def recompile(function: types.FunctionType, edit: Callable[[ast.Module], ast.Module],
              namespace: Optional[dict] = None) -> types.FunctionType:
    """`function` rebuilt from its source after `edit(tree)`, compiled under its own file name and line
    numbers in `namespace` (default: the globals it was defined in). `edit` returns the tree; nodes it
    adds should be `ast.copy_location`-ed from the nodes they replace. Raises OSError/TypeError when the
    source cannot be read."""
    lines, first_line = inspect.getsourcelines(function)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    ast.increment_lineno(tree, first_line - 1)
    tree = ast.fix_missing_locations(edit(tree))
    out: Dict[str, Any] = {}
    exec(compile(tree, function.__code__.co_filename, "exec"), function.__globals__ if namespace is None
         else namespace, out)
    out[function.__name__].__wrapped__ = function
    return out[function.__name__]


def replace_line(function: types.FunctionType, old: str, new: str) -> Optional[types.FunctionType]:
    """`function` recompiled with the one source line containing `old` having `old` replaced by `new`
    (same line number, so tracebacks keep the host's numbering); None when `old` is not in its source
    exactly once (the host changed: the caller decides whether that is an error). `new` must not add lines."""
    if "\n" in new:
        raise ValueError("replace_line: the replacement must stay on one line (line numbers would shift)")
    lines, first_line = inspect.getsourcelines(function)
    source = "".join(lines)
    if source.count(old) != 1:
        return None
    source = textwrap.dedent(source.replace(old, new))
    out: Dict[str, Any] = {}
    exec(compile("\n" * (first_line - 1) + source, function.__code__.co_filename, "exec"), function.__globals__,
         out)
    out[function.__name__].__wrapped__ = function
    return out[function.__name__]


def holders(name: str, obj: Any, package: Optional[str] = None) -> List[types.ModuleType]:
    """The loaded modules whose global `name` is `obj` (they imported it by name: `from x import name`): what
    `patch(..., also=...)` must reach besides the owner. `package` keeps only that package's modules (needed for a
    value such as a bool, which other packages may hold under the same name by coincidence)."""
    return [m for n, m in list(sys.modules.items())
            if isinstance(m, types.ModuleType) and vars(m).get(name) is obj
            and (package is None or n == package or n.startswith(package + "."))]


def where_defined(obj) -> str:
    """Where class or function `obj` is defined: 'module.Name (file:line)', or just the module when the
    source cannot be found."""
    module = getattr(obj, "__module__", "?")
    name = f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"
    try:
        return f"{name} ({inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]})"
    except (OSError, TypeError):
        return name
