"""Benchmarks of the categorization service (``make bench`` = ``python -m benchmarks.run``).

One run measures, side by side on the same machine and the same Elo7 texts: the bundle's model alone,
the real worker end to end through the broker (throughput, latency, memory) and a naive
PyTorch/transformers consumer loop. See docs/benchmarks.md for what each figure means.
"""
