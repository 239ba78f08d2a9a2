"""Rapport: one customer, one timeline, one inbox."""

__version__ = "0.1.0"
