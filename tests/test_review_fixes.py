"""Regression tests for defects found in review: correct dropouts must not fail, replays must replay."""
import shlex
import threading

import numpy as np
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
    # default, not quick: quick's input bins are too small to judge p = 0.99 (statistical.supported_ps)
    result = run_check("torch.nn:Dropout", profile="default", dtype="float16", ps=[0.99], only=["INDEP-INPUT"])
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


# ---- p near 0 or 1 (found by an adversarial review: correct dropouts failed at p = 1e-5 and 1e-6) ----
BATTERY = ["EXPECTATION", "RATE-HOMOGENEITY", "INDEP-POSITIONS", "INDEP-ROWS", "INDEP-CALLS", "INDEP-INPUT"]


@pytest.mark.parametrize("p", [1e-5, 1e-6, 1 - 1e-5, 1e-300])
def test_correct_dropout_at_extreme_p_is_not_judged_rather_than_failed(p):
    # SEED-REPLAY's large example used the run's p, where two masks in a row are often equal; the
    # dispersion test read calls without drops as an exact-count sampler; EXPECTATION's z hit 1e143.
    result = run_check("torch.nn:Dropout", profile="quick", ps=[p])
    assert not [v for v in result.verdicts if v.status.is_failure], result.summary()
    by_id = {v.property_id: v for v in result.verdicts}
    assert {pid: by_id[pid].status for pid in BATTERY} == dict.fromkeys(BATTERY, Status.INCONCLUSIVE), result.summary()
    assert "judges p in [" in by_id["INDEP-CALLS"].summary, by_id["INDEP-CALLS"].summary
    assert by_id["DROP-RATE"].status == Status.PASS, by_id["DROP-RATE"].summary  # exact tests: judged at any p


def test_what_the_floor_prevents_is_a_false_alarm():
    # 64 calls of 131072 units at p = 1e-6 mostly drop nothing; read as binomial counts that is an
    # exact-count sampler far beyond any alpha here. The floor keeps such samples from being judged.
    from dropcheck import independence
    from dropcheck.ledger import get_profile
    from dropcheck.statistical import supported_ps

    assert independence.dispersion_test(torch.zeros(64), 131072, 1e-6).pvalue < 1e-8
    assert not supported_ps("INDEP-CALLS", get_profile("default"))[0] <= 1e-6


def test_the_p_floor_leaves_the_planned_ps_judged_in_every_profile():
    from dropcheck.defaults import DEFAULT_PS
    from dropcheck.ledger import PROFILES
    from dropcheck.statistical import CALL_UNITS, supported_ps

    for profile in PROFILES.values():
        for pid in CALL_UNITS:
            low, high = supported_ps(pid, profile)
            assert low <= min(DEFAULT_PS) and max(DEFAULT_PS) <= high, (profile.name, pid, low, high)
            if profile.name != "quick":  # the default profile judges the whole battery from p = 0.01 to 0.99
                assert low <= 0.01 and 0.99 <= high, (profile.name, pid, low, high)


def test_a_rate_bug_at_tiny_p_is_still_caught_by_drop_rate():
    def drops_two_percent(x, p, training):  # asked for p = 1e-6, drops 2%: a bias quick is planned to see
        return x * (torch.rand(x.shape) >= 0.02).to(x.dtype) / (1 - p) if training else x

    result = run_check(drops_two_percent, profile="quick", ps=[1e-6], only=["DROP-RATE"])
    assert [v.status for v in result.verdicts] == [Status.FAIL], result.summary()


# ---- misleading verdicts (found by a new user's review) ----------------------------------------------
def test_an_in_place_dropout_fails_input_untouched_only_not_support_scale():
    # Its output was compared with the input it had already overwritten: "neither dropped nor kept".
    from tests.broken_impls import in_place

    result = run_check(in_place, profile="quick", only=["SUPPORT-SCALE", "INPUT-UNTOUCHED"])
    got = {v.property_id: v.status for v in result.verdicts}
    assert got == {"SUPPORT-SCALE": Status.PASS, "INPUT-UNTOUCHED": Status.FAIL}, result.summary()


def _all_nan(x, p, training):
    return torch.full_like(x, float("nan")) if training else x


def test_a_nan_output_is_not_called_unreproducible():
    result = run_check(_all_nan, profile="quick", only=["SEED-REPLAY", "SUPPORT-SCALE"])
    by_id = {v.property_id: v for v in result.verdicts}
    assert by_id["SUPPORT-SCALE"].status == Status.FAIL, result.summary()
    assert "not determined by the seed" not in by_id["SEED-REPLAY"].summary, by_id["SEED-REPLAY"].summary


def _raises_always(x, p, training):
    raise TypeError("not implemented for this input")


def test_an_implementation_that_raises_for_any_p_does_not_pass_p_invalid():
    result = run_check(_raises_always, profile="quick", only=["P-INVALID"])
    (v,) = result.verdicts
    assert v.status == Status.ERROR and "valid p=0.5" in v.summary, v.summary


def test_a_sample_an_in_place_dropout_overwrote_is_not_a_pass():
    # Its later calls saw its own zeroed outputs: EXPECTATION passed with z = 0 and MDE 0.
    from tests.broken_impls import in_place

    result = run_check(in_place, profile="quick", ps=[0.5], only=["EXPECTATION", "DROP-RATE"])
    for v in result.verdicts:
        assert v.status == Status.INCONCLUSIVE and "in place" in v.summary, v.summary


def test_row_correlation_tests_only_pairs_within_a_group():
    # INDEP-ROWS stacks the rows of two calls; only pairs within a call say anything about sharing.
    from dropcheck import independence

    g = torch.Generator().manual_seed(5)
    rows = torch.rand((8, 4096), generator=g) >= 0.5
    across = torch.cat([rows, rows])  # call 2 repeats call 1 row for row: no row is shared within a call
    within = torch.cat([rows, rows[:1].expand(8, -1)])  # call 2's rows all share one mask
    groups = [0] * 8 + [1] * 8
    assert independence.row_correlation_test(across, 0.5, groups=groups).pvalue > 1e-3
    assert independence.row_correlation_test(within, 0.5, groups=groups).pvalue < 1e-12
    assert independence.row_correlation_test(across, 0.5).pvalue < 1e-12  # without groups, every pair counts


# ---- found reviewing this session's change --------------------------------------------------------------
def _numpy_no_autograd(x, p, training):
    """Correct in train mode, but through numpy: an input that requires grad cannot go in."""
    if not training:
        return x
    keep = np.random.random_sample(tuple(x.shape)) >= p
    return torch.from_numpy(x.numpy() * keep / (1 - p)).to(x.dtype)


def _torch_in_place(x, p, training):
    return torch.nn.functional.dropout(x, p, training, inplace=True)


def test_drop_rate_still_judges_an_implementation_without_autograd_and_notes_it():
    (v,) = run_check(_numpy_no_autograd, profile="quick", ps=[0.5], only=["DROP-RATE"]).verdicts
    assert v.status == Status.PASS and "requires grad raised" in v.summary, v.summary


def test_drop_rate_on_torch_in_place_dropout_is_inconclusive_not_an_error():
    (v,) = run_check(_torch_in_place, profile="quick", ps=[0.5], only=["DROP-RATE"]).verdicts
    assert v.status == Status.INCONCLUSIVE and "in place" in v.summary, v.summary


def test_properties_not_judged_at_a_p_get_no_share_of_alpha():
    # quick, inverted: all 16 tests at p = 0.5; at p = 1e-6 only the exact ones, DROP-RATE's 2 and
    # RATE-EDGES' 1, none of the rest of the battery's.
    result = run_check("torch.nn:Dropout", profile="quick", ps=[1e-6, 0.5], only=["DROP-RATE"])
    assert result.ledger["tests"] == 19 and result.ledger["alpha_each"] == pytest.approx(1e-6 / 19), result.ledger


def test_an_inherited_sigterm_ignore_is_respected_and_handlers_are_put_back(monkeypatch, capsys):
    import signal

    from dropcheck.cli import main

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set from the main thread")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        real = signal.signal
        for inherited in (signal.SIG_IGN, signal.SIG_DFL):
            real(signal.SIGTERM, inherited)
            installed: list = []

            def recording(sig, handler, installed=installed):
                if sig == signal.SIGTERM:
                    installed.append(handler)
                return real(sig, handler)

            monkeypatch.setattr(signal, "signal", recording)
            assert main(["check", "torch.nn:Dropout", "--only", "EVAL-IDENTITY", "--profile", "quick"]) == 0
            monkeypatch.setattr(signal, "signal", real)
            assert signal.getsignal(signal.SIGTERM) == inherited
            assert bool(installed) == (inherited == signal.SIG_DFL), installed
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_decode_json_refuses_to_overwrite_the_model_source(tmp_path, capsys):
    from dropcheck.cli import main

    source = tmp_path / "m.py"
    source.write_text("from dropcheck.gpt import GPTModel as GPT\n")
    before = source.read_text()
    assert main(["decode", f"{source}:GPT", "--json", str(source)]) == 2
    assert "TARGET's source file" in capsys.readouterr().err and source.read_text() == before


def test_below_the_periodograms_floor_indep_positions_runs_its_other_tests():
    # Per test, not per property: at p = 0.002 (default) the periodogram is left out, and the exact
    # runs and lag tests still judge, and catch a tiled mask.
    from tests.broken_impls import tiled_mask

    result = run_check("torch.nn:Dropout", profile="default", ps=[0.002], only=["INDEP-POSITIONS"])
    (v,) = result.verdicts
    assert v.status == Status.PASS and [t.name for t in v.tests] == ["markov", "stride-lags"], v.summary
    assert "no periodogram" in v.summary and result.ledger["tests"] == 15, (v.summary, result.ledger["tests"])
    (bad,) = run_check(tiled_mask, profile="default", ps=[0.002], only=["INDEP-POSITIONS"]).verdicts
    assert bad.status == Status.FAIL, bad.summary
