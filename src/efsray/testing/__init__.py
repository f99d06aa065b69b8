"""Test infrastructure that benchmarks import too (kept out of the runtime API)."""
