"""Fake backend plugins for the registry's fault tests; each descriptor misbehaves in one way.

Registered only inside tests, through a temporary dist-info whose entry_points.txt points here.
"""
