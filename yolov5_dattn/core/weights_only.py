"""A weights-only allowlist for one load in one thread; torch's process-wide allowlist is never read or changed.

torch's weights-only unpickler (`torch.load(weights_only=True)`) accepts, besides torch's own tensor rebuilders,
the globals of one process-wide set (`torch.serialization.add_safe_globals`, `get_safe_globals`, the
`safe_globals(...)` context). Whatever one load adds there, every later or concurrent load in any thread accepts
too, and the `safe_globals` context's removal on exit takes the entries away from another thread's load in
flight. ultralytics' restricted loader adds its model classes there for good.

`scope(entries)` gives the current thread (the current `contextvars` context) an allowlist of its own: while the
block runs, the unpickler in this thread accepts exactly `entries` plus what is added inside the block through
torch's own API (ultralytics' loader calls `add_safe_globals`); other threads see the process-wide set as they
did, and that set is never changed. On exit the scope's additions are gone with it.

How: torch's unpickler reads the user allowlist through module functions of `torch._weights_only_unpickler`
(`_get_user_allowed_globals`, and `_add/_remove/_get/_clear_safe_globals` behind `torch.serialization`'s API).
On first use of `scope` each is replaced (through `patching`) by one that acts on the calling context's scope
when it has one and calls torch's own otherwise, so code outside a scope sees torch unchanged.
"""
import contextlib
import contextvars
import threading
from typing import Any, Dict, Iterable, Iterator, List, Optional

from yolov5_dattn import patching

__all__ = ["scope", "in_scope", "current", "STEP", "WHY"]

STEP = "safe loading"
WHY = ("torch keeps one weights-only allowlist for the whole process: one load's allowlist must hold for that "
       "load, in its own thread, and leave the process-wide list as it was")

_scope: contextvars.ContextVar = contextvars.ContextVar("yolov5_dattn_weights_only_scope", default=None)
_install_lock = threading.Lock()
_MARK = "_yolov5_dattn_scoped"  # set on each replacement: a cheap "installed" test that survives patching.undo()
_FUNCTIONS = ("_get_user_allowed_globals", "_add_safe_globals", "_remove_safe_globals", "_get_safe_globals",
              "_clear_safe_globals")


def _named(entries: Iterable[Any]) -> Dict[str, Any]:
    """torch's entry forms (`obj`, or `(obj, "module.Name")`) as {"module.Name": obj}."""
    out: Dict[str, Any] = {}
    for entry in entries:
        if isinstance(entry, tuple):
            obj, name = entry
            out[name] = obj
        else:
            out[f"{entry.__module__}.{entry.__qualname__}"] = entry
    return out


def _replacements(wu) -> Dict[str, Any]:
    """The five functions of `torch._weights_only_unpickler`, each acting on the context's scope if any."""
    get_user, add, remove, get, clear = (wu._get_user_allowed_globals, wu._add_safe_globals,
                                         wu._remove_safe_globals, wu._get_safe_globals, wu._clear_safe_globals)

    def _get_user_allowed_globals():
        own = _scope.get()
        return get_user() if own is None else own

    def _add_safe_globals(safe_globals):
        own = _scope.get()
        return add(safe_globals) if own is None else own.update(_named(safe_globals))

    def _remove_safe_globals(globals_to_remove):
        own = _scope.get()
        if own is None:
            return remove(globals_to_remove)
        for name, obj in _named(globals_to_remove).items():
            if own.get(name) is obj:
                del own[name]

    def _get_safe_globals():
        own = _scope.get()
        return get() if own is None else [(obj, name) for name, obj in own.items()]

    def _clear_safe_globals():
        own = _scope.get()
        return clear() if own is None else own.clear()

    out = {f.__name__: f for f in (_get_user_allowed_globals, _add_safe_globals, _remove_safe_globals,
                                   _get_safe_globals, _clear_safe_globals)}
    for f in out.values():
        setattr(f, _MARK, True)
    return out


def _install() -> None:
    """Make torch's allowlist functions scope-aware (idempotent, thread-safe; inert outside a scope)."""
    import torch._weights_only_unpickler as wu
    if all(getattr(getattr(wu, name), _MARK, False) for name in _FUNCTIONS):
        return
    with _install_lock, patching.applying(STEP):
        if all(getattr(getattr(wu, name), _MARK, False) for name in _FUNCTIONS):
            return
        for name, replacement in _replacements(wu).items():
            if not getattr(getattr(wu, name), _MARK, False):
                patching.patch(wu, name, replacement, why=WHY)



@contextlib.contextmanager
def scope(entries: Iterable[Any] = ()) -> Iterator[None]:
    """While the block runs, this thread's weights-only allowlist is exactly `entries` (torch's forms: a class or
    function, or `(obj, "module.Name")`) plus what the block adds; the process-wide list is neither seen nor
    changed. Scopes nest (the inner one replaces the outer until it exits)."""
    _install()
    token = _scope.set(_named(entries))
    try:
        yield
    finally:
        _scope.reset(token)


def in_scope() -> bool:
    """True inside a `scope` block in this thread."""
    return _scope.get() is not None


def current() -> Optional[List[Any]]:
    """This thread's scoped allowlist as torch's `(obj, name)` entries, or None outside a scope."""
    own = _scope.get()
    return None if own is None else [(obj, name) for name, obj in own.items()]
