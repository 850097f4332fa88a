"""Whether the user vouches for the checkpoints of this run: the one switch both hosts' loaders ask.

By default a checkpoint is loaded weights-only with an allowlist, so nothing in it can run. A file that needs
full pickle (classes outside the allowlist, a YOLO-NAS model) is loaded only when the user trusts it:

- on the command line, `--trust-checkpoint` (our commands set `YOLOV5_DATTN_TRUST_CHECKPOINT=1` for the run, so
  worker processes see it too);
- in Python, `with trust_checkpoints(): ...` (this thread only, for the block).
"""
import contextlib
import contextvars
import os
import sys
from typing import Iterator, List, Sequence

__all__ = ["TRUST_ENV", "TRUST_FLAG", "command_line_trust", "trusted", "trust_checkpoints"]

TRUST_ENV = "YOLOV5_DATTN_TRUST_CHECKPOINT"
TRUST_FLAG = "--trust-checkpoint"

_trust: contextvars.ContextVar = contextvars.ContextVar("yolov5_dattn_trust_checkpoint", default=None)


def trusted() -> bool:
    """True when the user explicitly trusts the checkpoints loaded now: inside `trust_checkpoints()` (its
    argument decides), else when `YOLOV5_DATTN_TRUST_CHECKPOINT=1`."""
    here = _trust.get()
    return here if here is not None else os.environ.get(TRUST_ENV, "") == "1"


@contextlib.contextmanager
def trust_checkpoints(trust_checkpoint: bool = True) -> Iterator[None]:
    """Within the block (this thread), checkpoints the safe loader refuses are loaded with full pickle when
    `trust_checkpoint` is True (a pickle can run code: only for files whose source you trust), and never when
    it is False, whatever the environment says."""
    token = _trust.set(bool(trust_checkpoint))
    try:
        yield
    finally:
        _trust.reset(token)


@contextlib.contextmanager
def command_line_trust(argv: Sequence[str]) -> Iterator[List[str]]:
    """For a command that takes `--trust-checkpoint` among arguments of another syntax (`yolov5-dattn yolo`'s
    key=value): yields `argv` without the flag. With the flag, `YOLOV5_DATTN_TRUST_CHECKPOINT=1` holds for the
    block (worker processes inherit it) and is put back as it was after; without it, a variable set to 1 by the
    environment gets one notice on stderr, since it makes full-pickle loads possible."""
    rest = [a for a in argv if a != TRUST_FLAG]
    if len(rest) == len(argv):
        if os.environ.get(TRUST_ENV, "") == "1" and int(os.environ.get("RANK", -1)) in (-1, 0):
            print(f"notice: {TRUST_ENV}=1 is set: checkpoints the safe loader refuses are loaded with full pickle, "
                  f"which can run code (as with {TRUST_FLAG}); unset it to load only what is safe", file=sys.stderr)
        yield rest
        return
    before = os.environ.get(TRUST_ENV)
    os.environ[TRUST_ENV] = "1"
    try:
        yield rest
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before
