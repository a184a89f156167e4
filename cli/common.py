"""What every command shares: the console and the error boundary."""

from __future__ import annotations

import functools
import sys
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from embedstore.errors import EmbedstoreError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print one red line on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # Library warnings (e.g. a checkpoint digest that differs from the registry's) are
    # for the user: one yellow line, not a source listing.
    first = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    err_console.print(f"[yellow]warning:[/] {escape(first)}", highlight=False, soft_wrap=True)


def handle_errors(func):
    """Turn the project's errors (and OS errors on files) into one line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        try:
            return func(*args, **kwargs)
        except EmbedstoreError as exc:
            fail(str(exc), exc.exit_code)
        except (OSError, MemoryError) as exc:
            fail(f"{type(exc).__name__}: {exc}", 1)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper
