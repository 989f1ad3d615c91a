"""Error types shared by the file-reading side of core.

Both derive from ValueError, so callers that treat "bad input" generically (the CLI's
``user_errors``) catch them without importing this module.
"""

from __future__ import annotations


class GGUFError(ValueError):
    """A GGUF file is malformed, truncated, or uses an encoding bitnet cannot read.

    The message names the file region (header, metadata key, tensor) and the reason.
    """


class ModelFormatError(ValueError):
    """A well-formed GGUF file that is not a model bitnet can run: a missing or absurd
    metadata key, a missing/extra/misshapen tensor, an unsupported feature (biases, ...)."""
