"""Errors that the CLI turns into one clear line (no traceback)."""


class CounterclipError(Exception):
    """A user-facing error: bad input, a missing file or weights that cannot be fetched offline."""


class UnknownNameError(CounterclipError, KeyError):
    """An unknown registry name; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class DatasetNotFoundError(CounterclipError):
    """A registry dataset is not on disk (other routes, such as its webdataset mirror, may still have it)."""


class InputError(CounterclipError, ValueError):
    """A value outside its domain (a budget above 1, pixels that are not floats in [0,1], a template without
    ``{}``); a ValueError too, so code that caught the older ValueErrors keeps working."""
