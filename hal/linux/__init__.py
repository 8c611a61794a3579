"""Backends for real Linux devices."""
