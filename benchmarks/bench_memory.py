"""Peak memory of guided backprop as the number of targets grows, with and without the budget.

Each case runs in a fresh process and reports its peak resident memory above the process's
state just before the call (model built, input made), so cases cannot inherit each other's
allocator caches. resnet18 (random weights) at 64 x 64, batch 1 and 4, K = 1, 10, 1000.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

CASES = [(1, 1), (1, 10), (1, 1000), (4, 1000)]


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(batch: int, targets: int, budget: int | None) -> None:
    import torch
    import torchvision

    import interpkit.core.gradients as gradients
    from interpkit import GuidedBackprop

    if budget is not None:
        gradients.MAX_BATCHED_ELEMENTS = budget
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(batch, 3, 64, 64)
    target = "all" if targets == 1000 else torch.arange(targets).expand(batch, -1)
    GuidedBackprop(model)(x[:1], target=0)  # warm: allocator, kernels
    start = _peak_kib()
    maps = GuidedBackprop(model)(x, target=target).maps
    print(json.dumps({"peak_mib": (_peak_kib() - start) / 1024, "shape": list(maps.shape)}))


def main() -> None:
    import torch

    print(f"## Guided backprop peak memory (resnet18, 64 x 64, torch {torch.__version__}, CPU)")
    print(f"  {'batch':>5} {'K':>5} {'budget':>12} {'peak above start':>18}")
    for batch, targets in CASES:
        for budget, label in ((None, "2**28 (default)"), (2**40, "none")):
            if budget is not None and targets < 1000:
                continue
            args = [sys.executable, __file__, "--child", str(batch), str(targets), str(budget or 0)]
            result = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
            print(f"  {batch:>5} {targets:>5} {label:>12} {result['peak_mib']:>15.0f} MiB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) or None)
    else:
        main()
