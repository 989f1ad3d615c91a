"""bitnet: run 1.58-bit (ternary) language models fast on whatever hardware you have.

    import bitnet
    m = bitnet.load("model.gguf", device="auto")
    print(m.generate("The capital of France is", max_tokens=16))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "list_devices", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: `import bitnet` stays cheap and never imports a plugin.
    if name == "load":
        from bitnet.core.api import load

        return load
    if name == "list_devices":
        from bitnet.registry import list_devices

        return list_devices
    raise AttributeError(f"module 'bitnet' has no attribute {name!r}")
