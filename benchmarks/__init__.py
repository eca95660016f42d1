"""Benchmarks, outside the shipped packages: each prints tables (``python -m benchmarks.<name>``)."""
