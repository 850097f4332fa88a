"""The one error type users see: a single line naming the flag or file and what to do."""


class UserError(Exception):
    """Bad input from the user. Entry points print `error: <message>` on one line and exit 2.

    The message must name the flag or file at fault and what to do about it.
    """
