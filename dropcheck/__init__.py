"""dropcheck: does your dropout behave as dropout must?"""

__version__ = "0.1.0"
