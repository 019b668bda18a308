"""Exceptions ferflow raises for bad input. Each message names the file, field or value."""


class FerflowError(Exception):
    """Base of every error the CLI reports as a one-line message instead of a traceback."""
