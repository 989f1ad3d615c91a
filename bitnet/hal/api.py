"""The backend API version: one integer, checked before a plugin's heavy import."""

API_VERSION = 1


def check_api_version(plugin: str, supported: tuple[int, int]) -> str | None:
    """Return None when ``API_VERSION`` lies in ``supported`` (inclusive), else the reason and fix."""
    low, high = supported
    if low <= API_VERSION <= high:
        return None
    if API_VERSION > high:
        fix = f"pip install --upgrade {plugin} (it speaks API {low}..{high}; bitnet speaks {API_VERSION})"
    else:
        fix = f"pip install --upgrade bitnet (the plugin {plugin} needs API {low}..{high}; " \
              f"bitnet speaks {API_VERSION})"
    return f"API version mismatch: {fix}"
