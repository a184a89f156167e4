"""What every command module shares: the console, the error boundary, JSON and plot outputs."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from embedstore.errors import EmbedstoreError, InputError
from embedstore.store.fileio import write_atomic

console = Console()
err_console = Console(stderr=True)

JSON_HELP = "Also write every number to this JSON file."


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


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically, and say so."""
    text = json.dumps(payload, indent=2)
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8") + b"\n"))
    console.print(f"wrote {path}")


def check_plot_path(plot: Path | None) -> None:
    """Refuse a ``--plot`` path that is not a PNG, before any work."""
    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(f"--plot writes PNG; give a path ending in .png, not {plot.name!r}")
