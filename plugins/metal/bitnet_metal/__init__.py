"""bitnet-metal: the Apple GPU backend for bitnet — an UNFINISHED skeleton.

It registers, probes and explains why it is unavailable; its Metal Shading Language kernels and
its host code were written without a Mac and have never run (see plugins/metal/README.md).
"""

__version__ = "0.1.0"
