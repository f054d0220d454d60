"""calibench: measure the confidence calibration of language models across their life."""

__version__ = "0.1.0"
