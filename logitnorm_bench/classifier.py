"""Any classifier ``nn.Module`` in the harness's architecture contract (``forward == head(features(x))``).

:func:`as_classifier` is what :func:`logitnorm_bench.api.evaluate` scores a given model through.  It
lives here, not in :mod:`logitnorm_bench.api`, so that importing the API (and the CLI's ``plan``)
imports no torch.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from logitnorm_bench.errors import ConfigError


class FcIsHead:
    """Mixin for a network whose last layer keeps its published name ``fc``: ``head`` is an alias of it.

    Keeping ``fc`` keeps published checkpoints loading unchanged (official code releases, OpenOOD,
    torchvision).  Reading ``head`` gives ``fc``; assigning ``head`` (a loss that swaps the head) replaces
    ``fc``: ``nn.Module.__setattr__`` would otherwise put the new module into ``_modules`` under
    ``head``, where this property hides it.  List it before the ``nn.Module`` base.
    """

    @property
    def head(self) -> nn.Module:
        return self.fc

    def __setattr__(self, name, value):
        super().__setattr__("fc" if name == "head" else name, value)


def as_classifier(model, *, features: Callable | None = None, head: Callable | None = None):
    """``model`` with the harness's ``features``/``head`` contract (``forward == head(features(x))``).

    A model that has both is returned as it is.  Otherwise, with ``features`` and ``head`` given they
    are used; with neither, the model is split at its last ``nn.Linear``: ``head`` is that layer and
    ``features(x)`` is the input it receives when the model runs.
    """
    if features is None and head is None and callable(getattr(model, "features", None)) \
            and isinstance(getattr(model, "head", None), nn.Module):
        return model
    if (features is None) != (head is None):
        raise ConfigError("evaluate(): give both features= and head=, or neither")
    if features is not None:
        return _GivenSplit(model, features, head)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"evaluate(): {type(model).__name__} has no nn.Linear to split at; "
                          "pass features= and head=")
    return _SplitAtLinear(model, linears[-1])


class _SplitAtLinear(nn.Module):
    """Features = the input of the model's last ``nn.Linear`` (captured by a forward pre-hook)."""

    def __init__(self, model, head):
        super().__init__()
        self.model = model
        self._head = [head]  # a list: not a second registration of a submodule the model owns

    @property
    def head(self):
        return self._head[0]

    def features(self, x):
        captured: dict[str, Any] = {}

        def grab(module, inputs):
            captured["f"] = inputs[0]

        handle = self.head.register_forward_pre_hook(grab)
        try:
            out = self.model(x)
        finally:
            handle.remove()
        if "f" not in captured:
            raise ConfigError("evaluate(): the model's last nn.Linear was not called in its forward; "
                              "pass features= and head=")
        f = captured["f"]
        # The harness's contract is forward == head(features): a model whose output is not that
        # layer's output (a softmax after it, say) would give wrong scores silently.
        if not getattr(self, "_checked", False):
            if out.shape != (f.shape[0], self.head.out_features) or not torch.allclose(
                    self.head(f), out, rtol=1e-4, atol=1e-5):
                raise ConfigError("evaluate(): the model's output is not the output of its last nn.Linear; "
                                  "pass features= and head=")
            self._checked = True
        return f

    def forward(self, x):
        return self.model(x)


class _GivenSplit(nn.Module):
    def __init__(self, model, features, head):
        super().__init__()
        self.model = model
        self._features = features
        self.head = head if isinstance(head, nn.Module) else _CallableHead(head)

    def features(self, x):
        return self._features(x)

    def forward(self, x):
        return self.head(self.features(x))


class _CallableHead(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, f):
        return self.fn(f)
