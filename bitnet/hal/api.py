"""The backend API version: one integer, checked before a plugin's heavy import.

It covers everything a plugin imports from ``bitnet.hal``: the KernelBackend contract, and for
GPU plugins the device runtime (``device_runtime``), the shared ``gpu_backend`` and the weight
layouts (``device_layout``). A change that would break a plugin written for the previous
version raises it; plugins declare the inclusive range they speak.

- 1: the KernelBackend contract (ops on device buffers, capabilities as data).
- 2: the GPU device runtime and the one GPU backend over it (``device_runtime``, ``gpu_backend``,
  ``device_layout`` under ``bitnet.hal``); record and replay of a decode step (the optional
  ``recording``, ``write`` and ``submission_count``); modules renamed so each says what it is
  (``bitnet.hal.formats`` -> ``weight_formats``, ``bitnet.hal.op_checks`` -> ``arg_checks``).
- 3: paged KV caches (``kv_blocks``): ``attention`` and ``decode_layer`` take an optional block
  table; ``attention_rows`` runs B rows of ONE cache through per-row block tables (it took B
  caches before); a KV cache object has ``n_layers``, ``n_ctx`` and ``width``.
"""

API_VERSION = 3


def check_api_version(plugin: str, supported: tuple[int, int]) -> str | None:
    """Return None when ``API_VERSION`` is in ``supported`` (inclusive), else the reason and fix."""
    low, high = supported
    if low <= API_VERSION <= high:
        return None
    if API_VERSION > high:
        fix = f"upgrade the plugin {plugin}; it speaks API {low}..{high}, bitnet speaks " \
              f"{API_VERSION} (bitnet's own plugins: scripts/install.sh in its repository)"
    else:
        # never `pip install bitnet`: that name on PyPI is an unrelated project
        fix = f"upgrade bitnet from its repository (scripts/install.sh; the plugin {plugin} " \
              f"needs API {low}..{high}, bitnet speaks {API_VERSION})"
    return f"API version mismatch: {fix}"
