"""The one exception type the library raises for misuse and bad input."""


class RepAdapterError(ValueError):
    """A problem with the caller's model, config or file; the message says how to fix it."""
