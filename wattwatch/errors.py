"""The one exception type the CLI turns into a single line on stderr and a non-zero exit."""


class WattwatchError(Exception):
    """A command could not do its job; the message is one line meant for the user."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (server errors carry DETAIL/HINT lines after it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
