"""The registry of modules a host's model YAMLs may name: one object per host, in the style of MMEngine's.

    REGISTRY = Registry("yolov5")
    REGISTRY.register_module(C3_DAttention, repeats=True)     # a call ...
    @REGISTRY.register_module(repeats=True)                   # ... or a decorator
    class MyBlock(nn.Module): ...
    REGISTRY.get("MyBlock"), "MyBlock" in REGISTRY, print(REGISTRY)

A name registered by another class raises `RegistryConflict` naming where the first one is defined, unless
`force=True`. The host adapter teaches its parse_model the entries: it passes `host_owner` (where the host itself
defines a name, so a registration cannot hide the host's own module by accident) and `on_change` (called after
every registration, to publish the entries into the host).
"""
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

from torch import nn

from yolov5_dattn.patching import where_defined

__all__ = ["Entry", "Registry", "RegistryConflict"]


class RegistryConflict(ValueError):
    """`register_module` was given a name that the host or another registered class holds already."""


@dataclass(frozen=True)
class Entry:
    """One registered module.

    name: what YAMLs write; cls: the nn.Module class; channels: its constructor starts `(c1, c2, ...)` (the host
    inserts the input channels and scales c2 by the width multiple); repeats: its third argument is the repeat
    count n (the host depth-scales the YAML's number and passes it as n); note: how the host treats it besides;
    force: it was registered over a name the host or another class held.
    """
    name: str
    cls: type
    channels: bool = True
    repeats: bool = False
    note: str = ""
    force: bool = False

    @property
    def where(self) -> str:
        """'package.module.Class (path/to/file.py:12)'."""
        return where_defined(self.cls)


class Registry:
    """Named nn.Module classes for one host's model YAMLs (see the module docstring).

    Args:
        scope: the host's name, for messages ('yolov5', 'ultralytics').
        host_owner: name -> where the host itself defines that name, or None when it does not.
        on_change: called with the registry after each registration that changed it.
    """

    def __init__(self, scope: str, host_owner: Optional[Callable[[str], Optional[str]]] = None,
                 on_change: Optional[Callable[["Registry"], None]] = None):
        self.scope = scope
        self.host_owner = host_owner
        self.on_change = on_change
        self._entries: Dict[str, Entry] = {}

    def register_module(self, cls: Optional[type] = None, *, name: Optional[str] = None, force: bool = False,
                        channels: bool = True, repeats: bool = False, note: str = ""):
        """Register `cls` under `name` (default: its class name). Returns `cls`; without `cls`, a decorator.

        Registering the same class under the same name with the same flags again is a no-op. Raises TypeError for
        a non-Module, RegistryConflict for a name held by another class or by the host (unless `force`)."""
        if cls is None:
            return lambda c: self.register_module(c, name=name, force=force, channels=channels, repeats=repeats,
                                                  note=note)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_module expects an nn.Module class, got {cls!r}")
        name = name or cls.__name__
        new = Entry(name, cls, channels, repeats, note, force)
        old = self._entries.get(name)
        if old is not None and old.cls is cls and (old.channels, old.repeats) == (channels, repeats):
            return cls
        if old is not None and old.cls is not cls and not force:
            raise RegistryConflict(f"register_module: the name {name!r} is registered already, for {old.where}; "
                                   f"pass name= another name, or force=True to replace it")
        owner = None if force or self.host_owner is None else self.host_owner(name)
        if owner is not None:
            raise RegistryConflict(f"register_module: the name {name!r} is {self.host_possessive} own, {owner}; pass "
                                   f"name= another name, or force=True to replace it in YAMLs")
        self._entries[name] = new
        if self.on_change is not None:
            try:
                self.on_change(self)
            except RegistryConflict:  # the host refused it: the registry stays as it was
                if old is None:
                    del self._entries[name]
                else:
                    self._entries[name] = old
                raise
        return cls

    def remove(self, name: str, notify: bool = True) -> None:
        """Forget `name` (KeyError if it is not registered); the host is told (`on_change`) unless `notify` is
        False."""
        del self._entries[name]
        if notify and self.on_change is not None:
            self.on_change(self)

    @property
    def host_possessive(self) -> str:
        """The host's name as its users write it, possessive: "YOLOv5's", "ultralytics'"."""
        title = {"yolov5": "YOLOv5"}.get(self.scope, self.scope)
        return f"{title}'" if title.endswith("s") else f"{title}'s"

    def get(self, name: str) -> type:
        """The class registered as `name`; KeyError naming the registered names when there is none."""
        try:
            return self._entries[name].cls
        except KeyError:
            raise KeyError(f"{name!r} is not in the {self.scope} registry ({', '.join(self._entries)})") from None

    def entry(self, name: str) -> Entry:
        """The Entry registered as `name` (KeyError when there is none)."""
        return self._entries[name]

    def entries(self) -> List[Entry]:
        """Every entry, in registration order."""
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)

    def table(self) -> str:
        """The entries as a text table: YAML name, how the host builds it (channels, repeats), where defined."""
        rows = self.entries()
        width = max([len("name")] + [len(e.name) for e in rows])
        lines = [f"{'name':<{width}}  {'channels':<8}  {'repeats':<7}  defined at"]
        for e in rows:
            where = e.where + (f"; {e.note}" if e.note else "")
            lines.append(f"{e.name:<{width}}  {'c1, c2' if e.channels else 'as is':<8}  "
                         f"{'n' if e.repeats else '-':<7}  {where}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Registry(scope={self.scope!r}, {len(self)} modules)\n{self.table()}"
