"""ood-bench: a plugin-based benchmarking harness for OOD detection (LogitNorm, ICML 2022, first)."""

from logitnorm_bench.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
