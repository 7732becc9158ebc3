"""ood-bench: a plugin-based benchmarking harness for OOD detection.

The Python API (:mod:`logitnorm_bench.api`, docs/api.md): :func:`run`, :func:`evaluate`,
:func:`load_results`.  They are imported on first use, so ``import logitnorm_bench`` (and the CLI's
start-up) stays free of torch.
"""

from logitnorm_bench.hookspecs import hookimpl
from logitnorm_bench.logs import install_fallback

install_fallback()  # the harness's warnings reach stderr even where nothing configures logging

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__", "run", "evaluate", "load_results"]

_API = ("run", "evaluate", "load_results")


def __getattr__(name: str):
    if name in _API:
        from logitnorm_bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'logitnorm_bench' has no attribute {name!r}")
