"""Moved to ``bitnet.hal.device_layout`` (the API version covers what GPU plugins read); this
name stays for existing imports."""

from bitnet.hal.device_layout import *  # noqa: F401,F403
