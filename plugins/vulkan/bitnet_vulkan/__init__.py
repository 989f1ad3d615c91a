"""bitnet-vulkan: a bitnet kernel backend on Vulkan compute (SPIR-V shaders compiled ahead of
time; Mesa's lavapipe runs it on CPUs for CI).

The entry point is ``bitnet_vulkan.descriptor:descriptor``; importing this package stays cheap.
"""

__version__ = "0.1.0"
