"""Regression tests for defects found in review: correct dropouts must not fail, replays must replay."""
import shlex

import pytest
import torch

from dropcheck.cli import main
from dropcheck.runner import run_check
from dropcheck.verdict import Status


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("target,contract", [("torch.nn:AlphaDropout", "alpha"),
                                             ("torch.nn:FeatureAlphaDropout", "feature-alpha")])
def test_alpha_dropout_in_low_precision_conforms(target, contract, dtype):
    # Inputs near α' ≈ -1.758 used to read as dropped in bfloat16 (a 15% "drop rate" at p=0.1).
    result = run_check(target, contract=contract, profile="quick", dtype=dtype,
                       only=["DROP-RATE", "INDEP-CALLS", "INDEP-INPUT"])
    assert result.ok, result.summary()


def test_float16_near_p_one_does_not_overflow_the_input_test():
    # x/(1-p) for x up to 1e3 overflowed float16 at p=0.99: a correct dropout failed INDEP-INPUT.
    result = run_check("torch.nn:Dropout", profile="quick", dtype="float16", ps=[0.99], only=["INDEP-INPUT"])
    assert result.ok, result.summary()


def test_classic_eval_in_float16_at_p_within_1e_7_of_one_conforms():
    result = run_check("reference_impls.classic:ClassicDropout", contract="classic", profile="thorough",
                       only=["EVAL-IDENTITY"], seed=18)  # the seed that failed in review
    assert result.ok, result.summary()


def _slightly_biased(x, p, training):
    """Drop rate p + 0.0015 at p=0.5: the default profile catches it at p=0.5."""
    if not training:
        return x
    q = p + 0.0015 if p == 0.5 else p
    return x * (torch.rand(x.shape) >= q).to(x.dtype) / (1 - p)


def test_a_replay_line_reproduces_the_verdict_it_came_from(capsys):
    full = run_check(_slightly_biased, ps=[0.1, 0.5, 0.9], profile="default", only=["DROP-RATE"])
    failing = [v for v in full.verdicts if v.status == Status.FAIL]
    assert failing, full.summary()
    replay = failing[0].replay
    assert "--profile default" in replay and "--p 0.1,0.5,0.9" in replay, replay
    argv = shlex.split(replay)[1:]
    argv[1] = "tests.test_review_fixes:_slightly_biased"  # the object's spec names this module
    assert main(argv) == 1, capsys.readouterr().out


@pytest.mark.parametrize("argv", [["check", "torch.nn:Dropout", "--only", "MASK-UNIT"],
                                  ["decode", "--only", "DROP-RATE"]])
def test_only_with_properties_the_command_does_not_check_exits_2(argv, capsys):
    assert main(argv) == 2
    assert "--only" in capsys.readouterr().err
