"""The one error type of the converter."""

from __future__ import annotations


class ConvertError(ValueError):
    """A checkpoint that cannot be converted as asked: the message names the file, config key or
    tensor at fault and, where there is one, what to do instead. A ValueError, so the CLI prints
    it as one line."""
