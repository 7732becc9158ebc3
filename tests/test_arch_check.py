"""The architecture is built at plan time (issue 12, item 6): on the meta device, confirmed on the CPU."""

from __future__ import annotations

import torch
from torch import nn

from logitnorm_bench.cli import main
from logitnorm_bench.hookspecs import hookimpl
from logitnorm_bench.plugins import get_plugins

BUILT: list[str] = []


class NoMetaKernel(nn.Module):
    """Reads a tensor's value in its constructor: fine on the CPU, impossible on the meta device."""

    def __init__(self, num_classes, input_shape, scale: float = 1.0):
        super().__init__()
        BUILT.append(str(torch.empty(0).device))
        self.k = int(torch.tensor(3.0).item())  # .item() has no meta kernel
        self.fc = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class WrongOutput(nn.Module):
    def __init__(self, num_classes, input_shape):
        super().__init__()
        self.fc = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes + 1)

    def forward(self, x):
        return self.fc(x.flatten(1))


class ArchPlugin:
    @hookimpl
    def register_architectures(self, register):
        register("no_meta_kernel", NoMetaKernel)
        register("wrong_output", WrongOutput)


def test_an_architecture_without_meta_kernels_is_confirmed_on_the_cpu_and_accepted(tiny_suite, tmp_path, capsys,
                                                                                     plugin_env):
    get_plugins().add(ArchPlugin(), name="archs")
    BUILT.clear()
    suite = tiny_suite(tmp_path / "s.yaml", arch=["no_meta_kernel"], arch_params=[{}])
    assert main(["plan", str(suite)]) == 0, capsys.readouterr().err
    assert BUILT == ["meta", "cpu"]  # tried on meta first, then confirmed on the CPU: once per distinct build


def test_an_architecture_with_the_wrong_output_shape_fails_at_plan_time(tiny_suite, tmp_path, capsys, plugin_env):
    get_plugins().add(ArchPlugin(), name="archs")
    suite = tiny_suite(tmp_path / "s.yaml", arch=["wrong_output"], arch_params=[{}])
    assert main(["plan", str(suite)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "experiments.e.matrix.arch: wrong_output cannot be built for digits" in err
    assert "(2, 11)" in err and "(2, 10)" in err


def test_the_check_builds_nothing_real_for_a_valid_suite(tiny_suite, tmp_path, capsys, plugin_env, monkeypatch):
    """A valid architecture is built on meta only: no CPU parameters are allocated at plan time."""
    from logitnorm_bench import suite as suite_mod

    devices = []
    real = suite_mod.check_architecture

    def spy(plugins, arch, *args, **kwargs):
        original = plugins.architectures.build

        def build(*a, **k):
            net = original(*a, **k)
            devices.append({p.device.type for p in net.parameters()})
            return net
        monkeypatch.setattr(plugins.architectures, "build", build)
        try:
            return real(plugins, arch, *args, **kwargs)
        finally:
            monkeypatch.setattr(plugins.architectures, "build", original)

    monkeypatch.setattr(suite_mod, "check_architecture", spy)
    suite = tiny_suite(tmp_path / "s.yaml", arch_params=[{"width": 16}, {"width": 32}])
    assert main(["plan", str(suite)]) == 0, capsys.readouterr().err
    assert devices == [{"meta"}, {"meta"}]
