"""`python -m dropcheck` is the `dropcheck` command."""
import sys

from dropcheck.cli import main

sys.exit(main())
