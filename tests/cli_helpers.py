"""Running the typer app in-process the way every CLI test needs it."""

from typer.testing import CliRunner

from cli.main import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def invoke(*args):
    """Run ``embedstore ARGS``; only clean exits, never a traceback."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result
