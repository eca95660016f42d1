"""Benchmarks that measure the service from outside (``python -m benchmarks.serving``)."""
