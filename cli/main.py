"""The ``embedstore`` application: each command group lives in its own module."""

from __future__ import annotations

import typer

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


def _register() -> None:
    # Each module adds its commands to ``app``; importing them must stay cheap
    # (no torch, no umap at import time). semantics_cmds extends analyze_cmds' group.
    from cli import (  # noqa: F401
        analyze_cmds,
        extract_cmds,
        report_cmds,
        semantics_cmds,
        store_cmds,
        train_cmds,
    )


_register()
