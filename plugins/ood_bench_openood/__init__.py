"""OpenOOD v1.5's CIFAR benchmarks as ood-bench suites: ``openood_cifar10``, ``openood_cifar100``.

Registered through the ``ood_bench`` entry points ``openood_*`` (pyproject.toml): datasets
(:mod:`.datasets`), the ``resnet18_32x32`` architecture (:mod:`.architectures`), the two suites
(``*.yaml`` here) and the reference report section (:mod:`.report`).
"""
