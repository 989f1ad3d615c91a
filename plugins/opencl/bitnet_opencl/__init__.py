"""bitnet-opencl: a bitnet kernel backend on OpenCL devices (GPUs; PoCL on CPUs for CI).

The entry point is ``bitnet_opencl.descriptor:descriptor``; importing this package stays cheap.
"""

__version__ = "0.1.0"
