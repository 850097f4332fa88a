"""The one error type users see: a single line naming the flag or file and what to do."""
import pickle

__all__ = ["UserError", "first_sentence", "torch_load_reason", "one_line"]


class UserError(Exception):
    """Bad input from the user. Entry points print `error: <message>` on one line and exit 2.

    The message must name the flag or file at fault and what to do about it.
    """


def first_sentence(text: object) -> str:
    """The first non-blank line of `text`, up to its first sentence end (never cut inside a word); '' if none.

    For quoting a library's error in a one-line message: their first sentence says what went wrong."""
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    end = line.find(". ")
    return line[:end + 1] if end > 0 else line


def torch_load_reason(e: BaseException) -> str:
    """What `torch.load` said went wrong, in one sentence: its weights-only errors are a paragraph of advice, then
    the reason (after 'WeightsUnpickler error:' or the first blank line), then more advice. A bare reader error
    (KeyError, IndexError, ...) keeps its type name, which its message alone does not say."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed"):
        text = text.split("\n\n", 1)[-1]
    line = first_sentence(text)
    if not line:
        return type(e).__name__
    if not isinstance(e, (RuntimeError, pickle.UnpicklingError, OSError, EOFError)):
        line = f"{type(e).__name__}: {line}"
    return line


def one_line(e: BaseException) -> str:
    """`e`'s message on one line (whitespace runs, newlines included, become one space), else its type name:
    what follows `error: ` when an entry point refuses bad input."""
    return " ".join(str(e).split()) or type(e).__name__
