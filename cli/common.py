"""What every command module shares: the console, the error boundary, inputs, JSON and plot outputs.

Both consoles print text as it is, never as Rich markup or emoji codes: a class, model or
path named ``[/]`` or ``[noise]`` is shown literally. Our own colours go through
:func:`styled`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from embedstore.errors import EmbedstoreError, InputError
from embedstore.store.fileio import write_atomic
from embedstore.store.outputs import check_outputs

console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)

JSON_HELP = "Also write every number to this JSON file."
OVERWRITE_HELP = "Replace existing output files (never an input of the command)."


def styled(*parts: str | tuple[str, str]) -> Text:
    """Literal text with our own styles: ``styled(("wrote", "green"), " ", path)``."""
    return Text.assemble(*parts)


def finite(value: float | None) -> float | None:
    """Typer callback: refuse NaN and infinity where a number is parsed (ranges let NaN through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def one_line(message: str) -> str:
    """``message`` with control characters (newlines from a name or path) shown escaped."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in message)


def fail(message: str, code: int = 1) -> None:
    """Print one red line on stderr and exit with ``code``."""
    err_console.print(styled(("error:", "bold red"), " ", one_line(message)), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # Library warnings (e.g. a checkpoint digest that differs from the registry's) are
    # for the user: one yellow line, not a source listing.
    first = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    err_console.print(styled(("warning:", "yellow"), " ", one_line(first)), highlight=False, soft_wrap=True)


def special_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be named as a file at all (a NUL, a FIFO, a device), or None.

    Missing paths and folders pass: the command decides about those. A FIFO or device is
    refused before anything opens it, since opening one can block forever.
    """
    text = os.fspath(path)
    if "\x00" in text:
        return f"{text!r} holds a NUL character; no file can have that name"
    try:
        mode = os.stat(text).st_mode
    except (OSError, ValueError):
        return None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"{text} is not a regular file (a FIFO, socket or device); give a file"
    return None


def check_input_names(values: Iterable[str | os.PathLike | None]) -> None:
    """Refuse (exit 2) any value naming a FIFO, device or a path with a NUL, before any work.

    For string options that may name a file (``--prompts FILE``, ``--ontology FILE``,
    ``SPACE=FILE``); :func:`handle_errors` checks every ``Path`` parameter the same way.
    """
    for value in values:
        if value is not None:
            problem = special_file_problem(value)
            if problem:
                fail(problem, 2)


def _path_arguments(kwargs: dict) -> list[Path]:
    found = []
    for value in kwargs.values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [item for item in items if isinstance(item, Path)]
    return found


def handle_errors(func):
    """The error boundary of every command.

    Before the command runs, every ``Path`` parameter naming a FIFO, device or a path with
    a NUL is refused (exit 2). Then the project's errors (and OS errors on files) become
    one line and an exit code.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        check_input_names(_path_arguments(kwargs))
        try:
            return func(*args, **kwargs)
        except EmbedstoreError as exc:
            fail(str(exc), exc.exit_code)
        except (OSError, MemoryError) as exc:
            fail(f"{type(exc).__name__}: {exc}", 1)
        except UnicodeDecodeError as exc:  # a reader that did not name its file: still one line
            fail(f"a text file is not UTF-8 ({exc}); save it as UTF-8", 1)
        except KeyboardInterrupt:
            # a command that can resume kept its finished work: say how to continue
            hint = "; the same command with --resume continues where it stopped" if "resume" in kwargs else ""
            err_console.print(f"interrupted{hint}")
            sys.exit(130)

    return wrapper


def check_analysis_outputs(*outputs: Path | None, inputs: Iterable = (), overwrite: bool = False,
                           plot: Path | None = None) -> None:
    """The output policy for an analysis' ``--json``/``--plot`` files, before any work."""
    check_plot_path(plot)
    check_outputs([*outputs, plot], inputs=inputs, overwrite=overwrite)


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically, and say so."""
    text = json.dumps(payload, indent=2)
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8") + b"\n"))
    console.print(f"wrote {path}", highlight=False)


def check_plot_path(plot: Path | None) -> None:
    """Refuse a ``--plot`` path that is not a PNG, before any work."""
    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(f"--plot writes PNG; give a path ending in .png, not {plot.name!r}")


# -- item selection (--where / --items), shared by every analysis and the report -----------

WHERE_HELP = ("Keep only items whose metadata COLUMN equals VALUE (e.g. split=test); repeatable: "
              "values of one column are alternatives, different columns must all match.")
ITEMS_HELP = "Keep only the items whose ids this file lists, one per line."


def where_option():
    """A fresh ``--where COLUMN=VALUE`` option (repeatable)."""
    return typer.Option([], "--where", metavar="COLUMN=VALUE", help=WHERE_HELP)


def items_option():
    """A fresh ``--items FILE`` option."""
    return typer.Option(None, "--items", metavar="FILE", help=ITEMS_HELP)


def open_selected(store: Path, where: list[str] | None, items: Path | None, fit_where: list[str] | None = None):
    """Open ``store`` for reading, seen through ``--where``/``--items`` (a context manager),
    with ``--fit-where`` the items the audio centroids are fitted on.

    The selection is parsed, and its names checked, before the store is opened.
    """
    from analyses.embeddings import opened
    from analyses.selection import Selection

    return opened(store, Selection.parse(where, items, fit_where=fit_where))


FIT_WHERE_HELP = ("Fit the audio class centroids on these items only (the syntax of --where, e.g. split=train) "
                  "and score the items --where/--items keep, which must be others (default: the scored items' "
                  "own centroids, as in the study).")


def fit_where_option():
    """A fresh ``--fit-where COLUMN=VALUE`` option (repeatable)."""
    return typer.Option([], "--fit-where", metavar="COLUMN=VALUE", help=FIT_WHERE_HELP)


def selection_of(st) -> dict | None:
    """What the JSON outputs record about the items ``st`` shows (None: every item)."""
    from analyses.selection import selection_record

    return selection_record(st)
