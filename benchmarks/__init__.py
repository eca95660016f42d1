"""Benchmarks: each module prints tables; run with python -m benchmarks.<name>."""
