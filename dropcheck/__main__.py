"""`python -m dropcheck` is the `dropcheck` command."""
from dropcheck.cli import run

run()
