"""Shared test set-up: Hypothesis runs derandomized on CI, and CUDA tests skip with a reason."""
import os

import pytest
import torch
from hypothesis import settings

# On CI every Hypothesis example sequence is derived from the test itself: a red CI is never luck.
settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available: torch.cuda.is_available() is False on this machine"
)
