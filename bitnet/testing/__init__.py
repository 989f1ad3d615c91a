"""Test helpers for backend authors (``bitnet.testing.conformance``: a pytest plugin)."""
