"""bitnet-cuda: the NVIDIA GPU backend for bitnet, on PyCUDA with precompiled PTX kernels.

Importing this package is cheap: PyCUDA is imported only inside the descriptor's ``probe`` and
``create`` (see ``descriptor.py``).
"""

__version__ = "0.1.0"
