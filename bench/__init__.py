"""Benchmarks: reproducible measurements behind docs/BENCHMARKS.md (see bench/README.md)."""
