"""The one exception type the library raises for misuse and bad input."""


class RepAdapterError(ValueError):
    """A problem with the caller's model, config or file; the message says how to fix it."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for
    one-line errors that wrap a library's longer one."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
