"""The numpy reference backend: the oracle every other backend is validated against.

Registered like any plugin, through the ``bitnet.backends`` entry point
``reference = bitnet.backends.reference.descriptor:descriptor``.
"""
