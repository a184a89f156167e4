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
    # (no torch, no umap at import time).
    from cli import store_cmds  # noqa: F401

    modules = (
        "cli.analyze_cmds",
        "cli.semantics_cmds",
        "cli.report_cmds",
        "cli.extract_cmds",
        "cli.train_cmds",
    )
    for module in modules:
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name not in modules:
                raise


_register()
