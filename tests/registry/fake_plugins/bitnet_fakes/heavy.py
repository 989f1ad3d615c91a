"""Stands in for a driver binding: importing it is what the API check must prevent."""

IMPORTED = True
