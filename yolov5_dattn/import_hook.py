"""Install a host integration when the host is imported, not when `yolov5_dattn` is.

`import yolov5_dattn` must keep registering our modules into YOLOv5 (the recipe's users rely on it), yet
`yolov5_dattn.nn` must be importable without YOLOv5 (a second host, benchmarks, environments without it).
So the package asks to be told when `yolov5` is imported: `before()` runs just before its first import
(shims that `import yolov5` itself needs), `after()` right after it (the registration). A host imported
already gets both at once.
"""
import importlib.abc
import importlib.util
import sys
import threading
from typing import Callable


class _WhenImported(importlib.abc.MetaPathFinder):
    """A finder that finds nothing itself: it wraps the loader of one top-level module."""

    def __init__(self, name: str, before: Callable[[], None], after: Callable[[], None]):
        self.name, self.before, self.after = name, before, after
        self._local = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            self.before()
            spec = importlib.util.find_spec(fullname)  # the other finders' answer
        finally:
            self._local.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader_exec = spec.loader.exec_module
        hook = self

        def exec_module(module):
            loader_exec(module)
            hook.remove()
            hook.after()

        spec.loader.exec_module = exec_module  # this loader instance serves this one import only
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def finding(name: str) -> bool:
    """True while the hook for `name` runs its `before()` (the host is about to be imported, not yet)."""
    return any(isinstance(f, _WhenImported) and f.name == name and getattr(f._local, "busy", False)
               for f in sys.meta_path)


def when_imported(name: str, before: Callable[[], None], after: Callable[[], None]) -> None:
    """Run `before()` just before top-level module `name` is first imported and `after()` once it has
    been (both now, in that order, if it is imported already). Nothing runs if it is never imported."""
    # `sys.modules[name] = None` is how a module is made unimportable: not imported, so wait for it like any other
    if sys.modules.get(name) is not None:
        before()
        after()
        return
    if any(isinstance(f, _WhenImported) and f.name == name for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _WhenImported(name, before, after))
