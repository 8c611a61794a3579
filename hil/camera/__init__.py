"""Camera simulator for tests, demo and benchmarks (placeholder, replaced below)."""
