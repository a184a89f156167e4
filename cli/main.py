"""The ``embedstore`` application, built here from the command modules.

Each command module holds a ``commands`` Typer of its own and never imports this one, so
there is no import circle; importing them stays cheap (no torch, no umap at import time).
"""

from __future__ import annotations

import typer

from cli import (
    analyze_cmds,
    extract_cmds,
    report_cmds,
    semantics_cmds,
    store_cmds,
    train_cmds,
)

app = typer.Typer(
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
    "confidence margins, ontology triplets, pre-joint vs joint, UMAP maps.",
    no_args_is_help=True,
)


def _include(group: typer.Typer, *modules) -> None:
    for module in modules:
        group.registered_commands.extend(module.commands.registered_commands)


_include(app, extract_cmds, store_cmds)
_include(analyze_app, analyze_cmds, semantics_cmds)
app.add_typer(analyze_app, name="analyze")
_include(app, report_cmds, train_cmds)
