"""Exceptions with messages a researcher can act on: they name the file (and line) and the fix."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from lungpipe.util.typed_config import ConfigError


class LungpipeError(Exception):
    """Base of the project's own errors."""


class DataError(LungpipeError, ValueError):
    """Bad input data: the message names the file, the line where known, and what is wrong."""


class DownloadError(LungpipeError):
    """A download failed or did not verify."""


class ChecksumError(DownloadError):
    """Downloaded bytes do not match the expected SHA-256."""


class TrainingLockedError(LungpipeError):
    """Another live process holds the lock of a checkpoint folder."""


# ---------------------------------------------------------------------------------------------
# How every entry point (stage scripts, the ``lungpipe`` CLI) reports a failure: one line
# ``error: <message>`` on stderr and a non-zero exit status, never a traceback, unless
# LUNGPIPE_DEBUG=1 asks for one.

DEBUG_ENV = "LUNGPIPE_DEBUG"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_OWN_CODE = (_PACKAGE_DIR + os.sep, os.path.join(os.path.dirname(_PACKAGE_DIR), "stages") + os.sep)
#: Exit status of a failure, and of an interrupt (128 + SIGINT, as shells report it).
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_message(exc: BaseException) -> str:
    """The one-line message shown for ``exc``: our own errors (and config, file and data
    errors) by their message; anything else is an internal error, labelled as such."""
    if isinstance(exc, (LungpipeError, ValueError)) and not _is_internal(exc):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None:
        what = exc.strerror or str(exc)
        target = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{target}: {what}"
    return (f"{type(exc).__name__}: {exc} (an internal error, not a problem with your input: rerun with "
            f"{DEBUG_ENV}=1 for the traceback and report it)")


def _is_internal(exc: BaseException) -> bool:
    # ValueErrors raised by numpy/torch internals are bugs of ours, not user errors; ours are
    # ConfigError/DataError (ValueError subclasses) or plain ValueErrors raised in lungpipe.
    if isinstance(exc, LungpipeError):
        return False

    if isinstance(exc, ConfigError):
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is None or not last.tb_frame.f_code.co_filename.startswith(_OWN_CODE)


def print_error(message: str, stream: TextIO | None = None) -> None:
    """Print ``error: <message>`` to stderr; the message is plain text, never rich markup, so
    bracketed values such as ``[nan, nan]`` are shown as they are."""
    console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
    console.print(Text("error: ", style="bold red") + Text(message))


def report_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for entry points: any exception becomes ``error: <message>`` on stderr and exit
    status 1 (130 for Ctrl-C); LUNGPIPE_DEBUG=1 re-raises it with its traceback."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            print_error("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            if debug_enabled():
                raise
            print_error(error_message(exc))
            sys.exit(EXIT_FAILURE)

    return wrapper
