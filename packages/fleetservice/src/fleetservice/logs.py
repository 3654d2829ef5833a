"""One log stream per process: structlog's own lines and the standard library's, rendered alike.

Fleet logs through structlog; the libraries under it (psycopg_pool, aiohttp, asyncio, `warnings`)
log through the standard library. Both go to one handler on the root logger whose
`structlog.stdlib.ProcessorFormatter` renders every line the same way — a JSON object per line when
stdout is not a TTY (or `fmt="json"`), the console renderer on a TTY — with the same fields:
`timestamp`, `level`, `logger`, `service` and, in JSON, an exception as a structured `exception`
field instead of a raw traceback (frames without local variables, which could hold secrets). An
exception nobody caught is logged the same way before the process exits. structlog's own lines are
rendered by structlog's processors and written straight to the stream (`_LineLogger`), not
through `logging`: a service's one line per request cost ~75 µs through the standard library's
record, handler and formatter (issue 26), ~25 µs this way. A daemon's lines go to
stdout, as the structlog docs advise for services; a one-shot command's go to stderr
(`to_stderr`), so that its stdout carries only its result (a token, a listing, a JSON report).

A line that cannot be written (stdout on a full disk, a closed pipe) or rendered never stops the
process: it is dropped and counted (`log_output_failures`, exported by the services as a
metric), and the first failure in a row is told once on stderr, which may still work. Every line
is cleaned of the secrets the entry point registered (`fleetservice.redact`) as it is written.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from types import TracebackType

import structlog
import structlog.tracebacks

from fleetservice.redact import protect, redact

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LogOutputFailures",
    "configure_logging",
    "log_output_failures",
]

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


# Frames without their local variables: those can hold tokens and database passwords.
_STRUCTURED_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


class LogOutputFailures:
    """Log lines dropped because they could not be written or rendered, and the last reason."""

    def __init__(self) -> None:
        self.count = 0
        self.last_error: str | None = None
        self._told = False

    def failed(self, exc: BaseException | None) -> None:
        self.count += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown"
        if self._told:
            return
        self._told = True
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"log output failing ({self.last_error}); lines are dropped and counted, "
                "the service goes on\n"
            )
            sys.stderr.flush()

    def written(self) -> None:
        self._told = False


_FAILURES = LogOutputFailures()


def log_output_failures() -> LogOutputFailures:
    """The process's count of dropped log lines (one per process: logging is process-wide)."""
    return _FAILURES


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` (or `sys.stderr`) is at the time of the line (tests swap
    it); a line that fails is counted, never raised and never followed by a traceback."""

    def __init__(self, to_stderr: bool = False) -> None:
        super().__init__(sys.stderr if to_stderr else sys.stdout)
        self._to_stderr = to_stderr

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if self._to_stderr else sys.stdout
        try:
            self.stream.write(redact(self.format(record)) + self.terminator)
            self.flush()
        except Exception as exc:  # RecursionError included: logging.StreamHandler re-raises it
            _FAILURES.failed(exc)
        else:
            _FAILURES.written()

    def handleError(self, record: logging.LogRecord) -> None:
        _FAILURES.failed(sys.exc_info()[1])


class _LineLogger:
    """structlog's logger: writes each rendered line to the stream, as `_StdoutHandler` does for
    the standard library's (the stream of the moment, secrets redacted, failures counted)."""

    __slots__ = ("_to_stderr", "name")

    def __init__(self, name: str, to_stderr: bool) -> None:
        self.name = name  # structlog.stdlib.add_logger_name reads it
        self._to_stderr = to_stderr

    def msg(self, line: str) -> None:
        stream = sys.stderr if self._to_stderr else sys.stdout
        try:
            stream.write(redact(line) + "\n")
            stream.flush()
        except Exception as exc:
            _FAILURES.failed(exc)
        else:
            _FAILURES.written()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _line_logger_factory(to_stderr: bool) -> Callable[..., _LineLogger]:
    def factory(*args: object) -> _LineLogger:
        name = args[0] if args and isinstance(args[0], str) else ""
        return _LineLogger(name, to_stderr)

    return factory


def _add_service(service: str) -> structlog.typing.Processor:
    def add_service(
        _logger: object, _method: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def configure_logging(
    fmt: str = "auto",
    level: str = "info",
    *,
    service: str,
    to_stderr: bool = False,
    secrets: tuple[str, ...] = (),
) -> None:
    """Configure once per entry point. `fmt` is auto, json or console; `level` one of LOG_LEVELS;
    `to_stderr` for commands whose stdout is their result; `secrets` never appear in a line
    (`fleetservice.redact`: the database URL's password, from `dsn_secrets`).

    Safe to call again (tests, several commands in one process): the previous handler is replaced.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    protect(*secrets)
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    stream = sys.stderr if to_stderr else sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_service(service),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    final: list[structlog.typing.Processor] = []
    if use_console:
        final.append(
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        )
    else:
        final += [_STRUCTURED_TRACEBACKS, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_line_logger_factory(to_stderr),
        cache_logger_on_first_use=False,
    )
    handler = _StdoutHandler(to_stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdoutHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    structlog.get_logger("fleet").critical("uncaught_exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    structlog.get_logger("fleet").critical(
        "uncaught_exception",
        thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
