"""How both services' commands end: exit statuses, one line per expected failure, and --help.

    0    done
    1    the command failed for a reason outside it: a database unreachable, a bootstrap refused,
         ingestd refusing the check… — one line on stderr (or one log line, for the daemons)
    2    configuration or usage error: a variable missing or malformed, a bad argument
    130  interrupted (Ctrl-C)

An expected failure never prints a traceback; with the service's log level at `debug` it does,
after the line, for whoever is chasing a bug. A reader that goes away (`pusher status | head -1`)
ends the command quietly with 1, as it ends the shell's own tools.
"""

from __future__ import annotations

import os
import sys
import traceback

from fleetservice.redact import redact

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STATUSES",
           "fail", "one_line", "output_closed"]  # fmt: skip

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

EXIT_STATUSES = (
    "exit status: 0 done; 1 failed (one line on stderr says why, e.g. database unreachable); "
    "2 configuration or usage error; 130 interrupted"
)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (psycopg's span several, with tabs)."""
    parts = [part.strip() for part in str(exc).splitlines() if part.strip()]
    return "; ".join(parts) or type(exc).__name__


def fail(prog: str, what: str, exc: BaseException | None = None, *, debug: bool = False) -> int:
    """Print `prog: what[: reason]` on stderr (the traceback too when `debug`); return 1."""
    line = f"{prog}: {what}" if exc is None else f"{prog}: {what}: {one_line(exc)}"
    print(redact(line), file=sys.stderr)
    if debug and exc is not None:
        print(redact("".join(traceback.format_exception(exc))), end="", file=sys.stderr)
    return EXIT_FAILED


def output_closed() -> int:
    """stdout's reader went away (a broken pipe): return 1 without a word, stdout pointed at
    /dev/null so the interpreter's last flush does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_FAILED
