"""bitnet-cpu: the CPU kernel backend for bitnet (C + intrinsics via Cython, OpenMP threads).

Found through the ``bitnet.backends`` entry point ``cpu``; importing this package is cheap (the
compiled extension loads only in ``CpuDescriptor.create``)."""

__version__ = "0.1.0"
