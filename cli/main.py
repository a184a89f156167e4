"""The ``embedstore`` application, built here from the command modules.

Each command module holds a ``commands`` Typer of its own and never imports this one, so
there is no import circle; importing them stays cheap (no torch, no umap at import time).
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors

from cli import (
    analyze_cmds,
    beyond_cmds,
    datasets_cmds,
    extract_cmds,
    report_cmds,
    scale_cmds,
    semantics_cmds,
    store_cmds,
    train_cmds,
)



class OneLineErrors(TyperGroup):
    """The root command: a usage error (bad option, value out of range) is one line, exit 2.

    Typer would draw a box of several lines; the README promises one line for every error.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            print(exc.ctx.get_help())
            code = 2
        except click_errors.ClickException as exc:
            from cli.common import err_console, one_line, styled

            where = getattr(getattr(exc, "ctx", None), "command_path", None)
            hint = f" (see `{where} --help`)" if where else ""
            err_console.print(styled(("error:", "bold red"), " ", one_line(exc.format_message()) + hint),
                              highlight=False, soft_wrap=True)
            code = exc.exit_code
        except typer.Abort:
            from cli.common import err_console

            err_console.print("aborted")
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="embedstore",
    help=(
        "Embed audio and text with two-tower models into versioned HDF5 stores, "
        "then probe them offline: zero-shot metrics, similarity histograms, "
        "confidence margins, ontology triplets, UMAP and a full report."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

analyze_app = typer.Typer(
    help="Probe a store offline: zero-shot metrics, audio-only labels, similarity histograms, "
    "confidence margins, ontology triplets, pre-joint vs joint, UMAP maps, and beyond the study: "
    "modality gap, probe and kNN, text-to-audio map, hierarchy-aware scores, confusion, paired comparisons.",
    no_args_is_help=True,
)


def _include(group: typer.Typer, *modules) -> None:
    for module in modules:
        group.registered_commands.extend(module.commands.registered_commands)


_include(app, extract_cmds, store_cmds, scale_cmds)
_include(analyze_app, analyze_cmds, semantics_cmds, beyond_cmds)
app.add_typer(analyze_app, name="analyze")
_include(app, report_cmds, train_cmds)
app.registered_groups.extend(datasets_cmds.commands.registered_groups)
