"""Simulated devices for boards that are not here; same contracts as the Linux backends."""
