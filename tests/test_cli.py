"""The `dropcheck` command: exit codes, both TARGET forms, JSON output, option validation."""
import json
import os
import stat
import subprocess
import sys

import pytest

from dropcheck.cli import main

EXACT_ONLY = ["--only", "EVAL-IDENTITY,SUPPORT-SCALE,GRAD-MASK", "--profile", "quick"]


@pytest.mark.parametrize("target", ["reference_impls.inverted:InvertedDropout", "reference_impls.inverted:inverted_dropout"])
def test_reference_exits_0_in_both_target_forms(target, capsys):
    assert main(["check", target, *EXACT_ONLY]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("target", ["tests.broken_impls:StickyEval", "tests/broken_impls.py:no_scaling"])
def test_broken_exits_1_in_both_target_forms(target, capsys):
    code = main(["check", target, "--only", "SUPPORT-SCALE,MODE-ROUNDTRIP", "--profile", "quick"])
    out = capsys.readouterr().out
    assert code == 1, f"expected exit 1 for {target}, got {code}:\n{out}"
    assert "FAIL" in out and "replay: dropcheck check" in out, f"expected a FAIL line with a replay command:\n{out}"


def test_json_has_every_verdict_with_seed_and_versions(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["check", "torch.nn:Dropout", "--p", "0.3", "--seed", "7", "--json", str(path), "--only",
                 "DROP-RATE,EVAL-IDENTITY", "--profile", "quick"]) == 0, capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["schema"] == "dropcheck-report/1" and data["seed"] == 7, data
    assert {"python", "torch", "numpy", "scipy"} <= set(data["versions"]), data["versions"]
    rate = [v for v in data["verdicts"] if v["property"] == "DROP-RATE"]
    assert rate and rate[0]["tests"] and rate[0]["tests"][-1]["alpha"] > 0, rate


def test_the_json_report_is_readable_as_the_users_other_files(tmp_path, capsys):
    path = tmp_path / "r.json"
    old = os.umask(0o022)
    try:
        assert main(["check", "torch.nn:Dropout", "--only", "EVAL-IDENTITY", "--json", str(path)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, oct(path.stat().st_mode)  # not mkstemp's private 0600


def test_outputs_that_would_overwrite_an_input_exit_2_and_leave_it_alone(tmp_path, capsys):
    source = tmp_path / "mine.py"
    source.write_text("import torch\ndef f(x, p, training):\n    return torch.nn.functional.dropout(x, p, training)\n")
    before = source.read_text()
    assert main(["check", f"{source}:f", "--only", "EVAL-IDENTITY", "--json", str(source)]) == 2
    assert "is TARGET's source file" in capsys.readouterr().err and source.read_text() == before
    report = tmp_path / "r.json"
    assert main(["check", f"{source}:f", "--only", "EVAL-IDENTITY", "--json", str(report)]) == 0
    kept = report.read_text()
    capsys.readouterr()
    for option in ("--markdown", "--html"):
        assert main(["report", str(report), option, str(report)]) == 2
        assert "is the report being rendered" in capsys.readouterr().err and report.read_text() == kept
    assert main(["report", str(report), "--markdown", str(tmp_path / "r.md"), "--html", str(tmp_path / "r.md")]) == 2


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["check", "no_such_module_xyz:Thing"], "no module named"),
        (["check", "torch.nn:NoSuchThing"], "has no attribute"),
        (["check", "torch.nn:Linear"], "constructor rejects p"),
        (["check", "torch:pi"], "expected an nn.Module subclass or a function"),
        (["check", "torch.nn:Dropout", "--p", "1.5"], "outside [0, 1]"),
        (["check", "torch.nn:Dropout", "--contract", "gaussian"], "not one of"),
        (["check", "torch.nn:Dropout", "--device", "tpu"], "not one of"),
        (["check", "torch.nn:Dropout", "--seed", "-3"], "negative"),
        (["check", "torch.nn:Dropout", "--json", "/no/such/dir/x.json"], "does not exist"),
        (["check", "torch.nn:Dropout", "--only", "NOPE"], "unknown property"),
        (["check", "torch.nn:Dropout", "--bogus"], "unrecognized arguments"),
    ],
)
def test_unusable_commands_exit_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) if "--bogus" in argv else _no_raise() as exc:
        code = main(argv)
    code = exc.value.code if exc is not None and hasattr(exc, "value") else code
    err = capsys.readouterr().err
    assert code == 2, f"expected exit 2 for {argv}, got {code}: {err}"
    assert needle in err and err.count("\n") == 1, f"expected one line containing {needle!r}, got: {err!r}"


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_python_dash_m_runs_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "dropcheck", "check", "torch.nn:Dropout", *EXACT_ONLY],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EVAL-IDENTITY" in proc.stdout, proc.stdout


def _raises_multiline(x, p, training):
    raise RuntimeError("first line\nsecond line")


def test_a_multiline_exception_stays_on_one_verdict_line(capsys):
    from dropcheck import console
    from dropcheck.runner import run_check

    (verdict,) = run_check(_raises_multiline, only=["EVAL-IDENTITY"], profile="quick").verdicts
    console.verdict_line(console.make_console(), verdict)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1 and "first line | second line" in lines[0], out


# ---- small things a new user met (UX review) ---------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["check", "torch.nn.Dropout"], "did you mean 'torch.nn:Dropout'?"),
    (["check", "torch.nn:Dropoutt"], "did you mean 'Dropout'?"),
    (["decode", "--max-positions", "100000"], "the built-in GPT has 64 positions"),
    (["decode", "--only", "DECODE-REPAET"], "did you mean DECODE-REPEAT?"),
    (["decode", "--only", "DROP-RATE"], "not a decode property; those are DECODE-"),
])
def test_mistakes_get_a_hint_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err, err


def test_choices_take_any_case_as_only_does(capsys):
    assert main(["check", "torch.nn:Dropout", "--contract", "Inverted", "--device", "CPU", "--profile", "Quick",
                 "--only", "eval-identity"]) == 0, capsys.readouterr()


def test_the_matrix_index_regenerates_the_folder_and_profile_it_describes(tmp_path):
    from dropcheck.matrix import render_index

    report = {"profile": "quick", "seed": 1, "devices": ["cpu"], "versions": {}, "kind": "check", "verdicts": [],
              "target": "t", "contract": "inverted", "ok": True, "duration_s": 1.0}
    text = render_index([report], ["t"], tmp_path / "m")
    assert f"`dropcheck matrix --out {tmp_path / 'm'}/ --profile quick`" in text, text[:600]
