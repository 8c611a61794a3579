"""Mirroring between the pair's boards: a pure plan (what to copy which way) and its transport."""
