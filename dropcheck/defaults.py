"""Defaults shared by the CLI, the pytest plugin and the API, in a module that imports nothing heavy
(the pytest plugin reads them at start-up, before torch may be imported)."""

DEFAULT_SEED = 20261124
DEFAULT_PS: tuple[float, ...] = (0.1, 0.5, 0.9)  # 0.5 alone would hide a keep/drop swap
DEFAULT_PROFILE = "default"
DEFAULT_CONTRACT = "inverted"
