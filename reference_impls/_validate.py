"""The one argument check every reference implementation shares."""
import math


def check_p(p: float) -> float:
    """Return p as a float, or raise ValueError for p outside [0, 1] or NaN."""
    p = float(p)
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    return p
