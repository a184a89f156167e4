"""The ``embedstore`` command line: thin typer wrappers around the library."""
