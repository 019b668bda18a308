"""Exceptions ferflow raises for bad input. Each message names the file, field or value."""


class FerflowError(Exception):
    """Base of every error the CLI reports as a one-line message instead of a traceback."""


# Exit codes of the `ferflow` command line, one per kind of failure an operator can tell apart:
#
#   code  meaning                          raised as / returned when
#   ----  -------------------------------  ---------------------------------------------------
#   0     ok                               the command did what it was asked
#   1     data contract failed             validation found error-severity failures; also
#                                          `ferflow runs check` finding drift left unrepaired
#   2     user error                       any other FerflowError: a bad path, param or value;
#                                          a server, store or disk fault (ferflow.console)
#   3     prepared data unreadable         PreparedDataError (ferflow.data.dataset): the files
#                                          ingest wrote are truncated or inconsistent; re-run
#                                          `ferflow ingest`
#
# An error class that needs its own code says so with a class attribute `exit_code`; the CLI
# returns `getattr(err, "exit_code", EXIT_USER_ERROR)`.
EXIT_OK = 0
EXIT_CONTRACT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_PREPARED_DATA = 3
