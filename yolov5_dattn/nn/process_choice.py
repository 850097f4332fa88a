"""A process-wide choice among named options, set at run time or once from an environment variable (timm's
`use_fused_attn` pattern): the one mechanism behind the attention-kernel and key-sampler switches."""
import contextlib
import os
from typing import Callable, Iterator, Optional, Sequence

__all__ = ["ProcessChoice"]


class ProcessChoice:
    """One named choice for the whole process.

    Args:
        env: the environment variable read (lower-cased) on the first `get()`; unset or empty gives `default()`.
        choices: the allowed names.
        default: the choice when the variable is unset (a callable, so it may read other variables).
        setter: the public setter's name, for messages ('set_attention_kernel').
    """

    def __init__(self, env: str, choices: Sequence[str], default: Callable[[], str], setter: str):
        self.env, self.choices, self.default, self.setter = env, tuple(choices), default, setter
        self._value: Optional[str] = None

    def check(self, name: str, source: str) -> str:
        """`name` if it is one of `choices`; else ValueError naming `source` and the choices."""
        if name not in self.choices:
            raise ValueError(f"{source}={name!r}: choose one of {', '.join(self.choices)}")
        return name

    def get(self) -> str:
        """The choice in force (the environment is read on the first call only)."""
        if self._value is None:
            value = os.environ.get(self.env, "").strip().lower()
            self._value = self.check(value, self.env) if value else self.check(self.default(), self.env)
        return self._value

    def set(self, name: str) -> None:
        """Make `name` the choice for this process from now on (ValueError for a name not in `choices`)."""
        self._value = self.check(name, self.setter)

    @contextlib.contextmanager
    def set_to(self, name: str) -> Iterator[None]:
        """`set(name)` for the duration of the block; the previous choice is restored on exit."""
        before = self.get()
        self.set(name)
        try:
            yield
        finally:
            self.set(before)
