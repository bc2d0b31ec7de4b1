"""The `gan` command line (typer): `app` is the console script `gan` (pyproject: gan.cli:app)."""

from gan.cli.main import app

__all__ = ["app"]
