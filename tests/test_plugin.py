"""The pytest plugin end to end, with pytester: a user's project, a dropout module, and pytest run
with the --dropcheck-* options (in a subprocess where the entry point, xdist or imports matter)."""
import json
import xml.etree.ElementTree as ET

import pytest

import dropcheck.decoding
import dropcheck.runner  # noqa: F401
from dropcheck.options import CHECK_OPTIONS, DECODE_OPTIONS

# In-process runs (pytester.runpytest) drop the modules first imported inside them, and numpy's C
# extensions cannot load twice in one process: so what the plugin imports is imported above first.

pytest_plugins = ["pytester"]

# A user's dropout module: one correct layer, one that forgets the 1/(1-p) scaling.
USER_MODULE = '''
import torch
from torch import nn


class GoodDropout(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p}")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return torch.zeros_like(x)
        return x * (torch.rand_like(x, dtype=torch.float32) >= self.p).to(x.dtype) / (1 - self.p)


class NoScaling(GoodDropout):
    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return torch.zeros_like(x)
        return x * (torch.rand_like(x, dtype=torch.float32) >= self.p).to(x.dtype)


class HangsInTrain(GoodDropout):
    def forward(self, x):
        if self.training:
            import time
            time.sleep(3600)
        return x
'''
QUICK = ["--dropcheck-profile=quick", "--dropcheck-p=0.5", "-p", "no:cacheprovider"]


@pytest.fixture
def project(pytester):
    pytester.makepyfile(userdrop=USER_MODULE)
    pytester.makepyfile(test_users_own="def test_users_own():\n    assert True\n")
    return pytester


def test_without_options_the_plugin_is_inert_and_light(pytester):
    pytester.makepyfile(test_light="""
        import sys
        def test_nothing_heavy_imported():
            heavy = [m for m in ("torch", "scipy", "matplotlib") if m in sys.modules]
            assert not heavy, heavy
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "dropcheck" not in result.stdout.str().split("collected")[0].split("plugins:")[0], "no header line without a target"
    assert "dropcheck-" in result.stdout.str(), "the plugin is registered through the pytest11 entry point"


def test_help_lists_every_cli_option_with_the_prefix(pytester):
    out = pytester.runpytest("--help").stdout.str()
    for opt in (*CHECK_OPTIONS, *DECODE_OPTIONS):
        assert f"--dropcheck-{opt.name}" in out, f"--dropcheck-{opt.name} missing from pytest --help"
    assert "--dropcheck-target" in out and "--dropcheck-decode-target" in out


def test_fails_exactly_the_broken_properties_with_xdist_and_junitxml(project):
    junit = project.path / "junit.xml"
    result = project.runpytest_subprocess("--dropcheck-target=userdrop:NoScaling", "--dropcheck-contract=inverted",
                                          "--dropcheck-only=EVAL-IDENTITY,SUPPORT-SCALE,DROP-RATE", *QUICK,
                                          "-n", "2", f"--junitxml={junit}", "--dropcheck-json=r.json")
    out = result.stdout.str()
    result.assert_outcomes(passed=3, failed=1)  # the user's own test, EVAL-IDENTITY, DROP-RATE; SUPPORT-SCALE fails
    result.stdout.fnmatch_lines(["*dropcheck *: target userdrop:NoScaling, contract inverted, profile quick, seed 20261124*",
                                 "*FAILED dropcheck::SUPPORT-SCALE[[]cpu[]]*"])
    assert "replay: dropcheck check userdrop:NoScaling" in out, out
    cases = {tc.get("name"): tc for tc in ET.parse(junit).getroot().iter("testcase")}
    assert {"EVAL-IDENTITY[cpu]", "SUPPORT-SCALE[cpu]", "DROP-RATE[p=0.5-cpu]"} <= set(cases), sorted(cases)
    broken = cases["SUPPORT-SCALE[cpu]"]
    props = {p.get("name"): p.get("value") for p in broken.iter("property")}
    assert broken.find("failure") is not None and props["dropcheck_property"] == "SUPPORT-SCALE", props
    assert props["dropcheck_replay"].startswith("dropcheck check userdrop:NoScaling"), props
    # The xdist controller gathers the workers' verdicts into one report, in the CLI's order.
    data = json.loads((project.path / "r.json").read_text())
    assert [(v["property"], v["status"]) for v in data["verdicts"]] == [
        ("EVAL-IDENTITY", "pass"), ("SUPPORT-SCALE", "fail"), ("DROP-RATE", "pass")], data["verdicts"]


def test_a_correct_layer_passes_and_the_json_report_is_written(project):
    result = project.runpytest("--dropcheck-target=userdrop:GoodDropout", "--dropcheck-json=r.json",
                               "--dropcheck-only=P-ZERO,DROP-RATE", *QUICK)
    result.assert_outcomes(passed=3)
    data = json.loads((project.path / "r.json").read_text())
    assert data["schema"] == "dropcheck-report/1" and data["ok"] is True, data
    assert [v["property"] for v in data["verdicts"]] == ["P-ZERO", "DROP-RATE"], data["verdicts"]
    # Each test is a slice of the CLI/API run: the same sample, p-values and alpha shares.
    import dropcheck

    api = dropcheck.check("userdrop:GoodDropout", profile="quick", ps=[0.5], only="P-ZERO,DROP-RATE").to_dict()
    stats = lambda d: [(t["name"], t["pvalue"], t["alpha"]) for v in d["verdicts"] for t in v["tests"]]
    assert stats(data) == stats(api) and stats(api), (stats(data), stats(api))


def test_after_three_hung_samples_the_same_properties_at_other_ps_are_not_run(project):
    """One slice per test, each its own run: the count of timeouts in a row is the session's, so an
    implementation whose samples hang costs one time limit per property, not one per test."""
    result = project.runpytest("--dropcheck-target=userdrop:HangsInTrain", "--dropcheck-timeout=1",
                               "--dropcheck-only=DROP-RATE,EXPECTATION,INDEP-CALLS", "--dropcheck-p=0.1,0.5",
                               "--dropcheck-profile=quick", "--dropcheck-json=r.json", "-p", "no:cacheprovider")
    out = result.stdout.str()
    result.assert_outcomes(passed=1, failed=6)  # the user's own test passes
    # From the report, not the terminal: how often a message shows there depends on its width.
    verdicts = json.loads((project.path / "r.json").read_text())["verdicts"]
    assert [(v["p"], v["status"]) for v in verdicts] == [(0.1, "timeout")] * 3 + [(0.5, "inconclusive")] * 3, verdicts
    assert all(v["summary"].startswith("not run: the last 3 statistical samples") for v in verdicts[3:]), verdicts
    assert "replay: dropcheck check userdrop:HangsInTrain" in out, out


def test_lf_reruns_only_the_failed_property(project):
    """pytest's cache keys a test by its node ID: --lf must find the dropcheck tests in it again."""
    args = ["--dropcheck-target=userdrop:NoScaling", "--dropcheck-only=EVAL-IDENTITY,SUPPORT-SCALE,DROP-RATE",
            "--dropcheck-profile=quick", "--dropcheck-p=0.5"]
    project.runpytest(*args).assert_outcomes(passed=3, failed=1)
    again = project.runpytest(*args, "--lf")
    again.assert_outcomes(failed=1, deselected=3)
    again.stdout.fnmatch_lines(["*FAILED dropcheck::SUPPORT-SCALE[[]cpu[]]*"])


def test_k_selects_by_property_id(project):
    result = project.runpytest("--dropcheck-target=userdrop:GoodDropout", "-k", "P-ZERO or P-ONE", *QUICK)
    result.assert_outcomes(passed=2, deselected=18)  # 11 exact + 8 statistical + the user's test


def test_decode_target_runs_the_decoding_checks(project):
    result = project.runpytest("--dropcheck-decode-target=dropcheck.gpt:GPTModel", "--dropcheck-max-positions=8",
                               "--dropcheck-only=DECODE-REPEAT,DECODE-CPU-CUDA", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=2, skipped=1)  # CPU-CUDA needs both devices
    result.stdout.fnmatch_lines(["*decode target dropcheck.gpt:GPTModel*", "*DECODE-CPU-CUDA*"])


@pytest.mark.parametrize("args,needle", [
    (["--dropcheck-target=userdrop:GoodDropout", "--dropcheck-p=1.5"], "--dropcheck-p: 1.5 is outside [0, 1]"),
    (["--dropcheck-contract=inverted"], "given without --dropcheck-target"),
    (["--dropcheck-target=userdrop:Missing"], "has no attribute"),
])
def test_bad_options_are_usage_errors(project, args, needle):
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert needle in result.stderr.str(), result.stderr.str()
