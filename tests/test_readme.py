"""The README's option table says what the code does: every option, with the code's default."""
import re
from pathlib import Path

from dropcheck.options import CHECK_OPTIONS

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_check_option_is_in_the_readme_with_its_default():
    rows = dict(re.findall(r"^\| `--([a-z-]+)` \|.*\| `?([^|`]+?)`? \|$", README, re.MULTILINE))
    for opt in CHECK_OPTIONS:
        assert opt.name in rows, f"README's option table has no row for --{opt.name}"
        shown = rows[opt.name].strip()
        want = "none" if opt.default is None and opt.name == "json" else ("all" if opt.default is None else str(opt.default))
        assert shown == want, f"README says --{opt.name} defaults to {shown!r}, the code to {want!r}"


def test_the_readme_opens_with_the_two_commands_ci_runs():
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    commands = re.findall(r"```sh\n(python3 -m venv .+)\n```", README)
    assert len(commands) >= 2 and "dropcheck check reference_impls" in commands[0], commands
    assert commands[1] in ci, f".ci/run must run the README's test command:\n{commands[1]}"
