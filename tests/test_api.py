"""The Python API: `dropcheck.check` / `dropcheck.decode` in a user's own test, a small typed
`__all__`, and an `import dropcheck` that loads neither torch nor scipy."""
import inspect
import json
import subprocess
import sys

import pytest
import torch

import dropcheck

QUICK = {"profile": "quick", "only": "EVAL-IDENTITY,SUPPORT-SCALE,DROP-RATE", "ps": 0.3}


def test_check_a_class_object_as_a_user_would():
    result = dropcheck.check(torch.nn.Dropout, "inverted", **QUICK)
    assert result.ok, result.summary()
    assert [v.property_id for v in result.verdicts] == ["EVAL-IDENTITY", "SUPPORT-SCALE", "DROP-RATE"]
    rate = result.verdicts[-1]
    assert rate.p == 0.3 and rate.tests and rate.tests[-1].alpha > 0, rate


def test_failing_result_reads_well_in_an_assert():
    from tests.broken_impls import no_scaling

    result = dropcheck.check(no_scaling, **QUICK)
    assert not result.ok
    message = result.summary()
    assert "SUPPORT-SCALE" in message and "replay: dropcheck check" in message, message
    assert "EVAL-IDENTITY" not in message.split("\n", 1)[1], f"only the broken property is listed:\n{message}"
    with pytest.raises(AssertionError, match="SUPPORT-SCALE"):
        assert result.ok, result.summary()


@pytest.mark.parametrize("mechanism", ["fork", "in-process"])
def test_check_leaves_the_callers_random_states_where_they_were(mechanism, monkeypatch):
    # In-process (CUDA, non-Linux) the checks seed torch, numpy and random in this very process:
    # every exact search must put them back (seeding.preserved_rngs), or a user's test that runs
    # dropcheck would see its random streams jump.
    from dropcheck import guard
    from dropcheck.seeding import rng_fingerprint

    if mechanism == "in-process":
        monkeypatch.setattr(guard, "choose_mechanism", lambda device="cpu": "alarm")
    before = rng_fingerprint()
    result = dropcheck.check(torch.nn.Dropout, "inverted", profile="quick",
                             only="SEED-REPLAY,EVAL-RNG-UNTOUCHED,SUPPORT-SCALE,DROP-RATE", ps=0.3)
    assert result.ok, result.summary()
    assert result.limits["isolation"]["cpu"] == ("fork" if mechanism == "fork" else "alarm"), result.limits
    assert rng_fingerprint() == before, f"dropcheck.check ({mechanism}) moved the caller's torch/numpy/random state"


def test_check_to_dict_is_the_json_report():
    data = json.loads(json.dumps(dropcheck.check("torch.nn:Dropout", **QUICK).to_dict(), default=str))
    assert data["schema"] == "dropcheck-report/1" and data["kind"] == "check" and data["ok"] is True


def test_decode_returns_a_result_object():
    result = dropcheck.decode(only=["DECODE-REPEAT"], max_positions=8)
    assert result.ok, result.summary()
    assert [v.property_id for v in result.verdicts] == ["DECODE-REPEAT"]
    data = result.to_dict()
    assert data["schema"] == "dropcheck-report/1" and data["kind"] == "decode" and data["max_positions"] == 8


def test_public_api_is_listed_typed_and_documented_with_an_example():
    assert set(dropcheck.__all__) >= {"check", "decode", "strategies", "CheckResult", "DecodeResult", "Verdict"}
    assert set(dropcheck.__all__) == set(dropcheck._LAZY) | {"__version__"}, "__all__ and the lazy names disagree"
    for name in dropcheck.__all__:
        obj = getattr(dropcheck, name)  # every listed name resolves
        if callable(obj) and not inspect.isclass(obj):
            sig = inspect.signature(obj)
            assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return type"
            assert ">>>" in (obj.__doc__ or ""), f"{name}'s docstring has no example"
    st = dropcheck.strategies
    for name in ("shapes", "drop_probabilities", "seeds", "dropout_inputs", "FLOAT_DTYPES"):
        assert hasattr(st, name), f"dropcheck.strategies.{name} missing"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dropcheck.nope  # noqa: B018


def test_import_dropcheck_is_light():
    code = ("import sys, dropcheck, dropcheck.plugin; heavy = [m for m in ('torch', 'scipy', 'numpy', 'matplotlib') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import dropcheck / dropcheck.plugin loaded {out.strip()}"


def test_the_plans_name_every_verdict_in_order():
    """The progress bars' totals and the pytest plugin's decode tests come from these plans."""
    from dropcheck.decoding import decode_plan
    from dropcheck.runner import check_plan

    devices = ["cpu", "cuda"]
    cuda = [("EVAL-IDENTITY", None, "cuda"), ("DROP-RATE", 0.1, "cuda"), ("DROP-RATE", 0.5, "cuda")]
    if not torch.cuda.is_available():
        cuda = [("EVAL-IDENTITY", None, "cuda"), ("DROP-RATE", None, "cuda")]  # one skip per property
    expected = [("EVAL-IDENTITY", None, "cpu"), ("DROP-RATE", 0.1, "cpu"), ("DROP-RATE", 0.5, "cpu")] + cuda
    only = ["EVAL-IDENTITY", "DROP-RATE"]
    assert check_plan("inverted", [0.1, 0.5], devices, only) == expected
    result = dropcheck.check(torch.nn.Dropout, ps=[0.1, 0.5], device=devices, profile="quick", only=only)
    got = [(v.property_id, v.p, v.device) for v in result.verdicts]
    assert got == expected, f"run_check: expected {expected}, got {got}"

    expected = [("DECODE-REPEAT", "cpu"), ("DECODE-REPEAT", "cuda"), ("DECODE-CPU-CUDA", "cuda")]
    assert decode_plan(devices, ["DECODE-REPEAT", "DECODE-CPU-CUDA"]) == expected
    decoded = dropcheck.decode(device=devices, only=["DECODE-REPEAT", "DECODE-CPU-CUDA"], max_positions=8)
    got = [(v.property_id, v.device) for v in decoded.verdicts]
    assert got == expected, f"run_decode: expected {expected}, got {got}"


def test_versions_never_initialise_cuda(monkeypatch):
    """Reading the device names would initialise CUDA, and every later CPU check in the process
    would then lose its forked worker (dropcheck.guard.choose_mechanism)."""
    from dropcheck import runner

    def would_initialise(*args):
        raise AssertionError("versions() read a CUDA device name before this process had initialised CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", would_initialise)
    got = runner.versions()["cuda_devices"]
    assert got == "2 (names not read: this run did not use CUDA)", got


def test_a_target_without_a_loadable_name_gets_no_command_that_cannot_run():
    # `dropcheck check tests.test_api:<locals>...` or `__main__:Mine` fails with "no attribute": say so instead.
    def doubles(x, p, training):
        return x * 2 if training else x

    (v,) = dropcheck.check(doubles, profile="quick", only=["SUPPORT-SCALE"]).verdicts
    assert v.status.value == "fail" and v.replay.startswith("none from the command line"), v.replay
    assert "only=['SUPPORT-SCALE']" in v.replay and "seed=" in v.replay, v.replay
