"""`python -m gan.cli ...`: the same as the `gan` console script."""

from gan.cli.main import app

app(prog_name="gan")
