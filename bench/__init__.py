"""Benchmarks (``make bench``): the pack's cost side by side with raw httpx, the SDK and Celery itself."""
