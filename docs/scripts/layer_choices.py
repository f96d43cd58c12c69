"""The layer ``layer=None`` chooses on popular architectures, as a markdown table.

Random weights (no download), one input each at the size the family is used with. Run
``python docs/scripts/layer_choices.py > docs/snippets/layer-choices.md``; the documentation page
includes that table and ``tests/test_layer_choice.py`` pins a fast subset.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable

import torch

TORCHVISION = [
    ("alexnet", 224), ("vgg11", 224), ("vgg16_bn", 224), ("resnet18", 224), ("resnet50", 224),
    ("resnext50_32x4d", 224), ("wide_resnet50_2", 224), ("densenet121", 224), ("googlenet", 224),
    ("inception_v3", 299), ("squeezenet1_0", 224), ("shufflenet_v2_x1_0", 224), ("mnasnet0_5", 224),
    ("mobilenet_v2", 224), ("mobilenet_v3_small", 224), ("mobilenet_v3_large", 224), ("efficientnet_b0", 224),
    ("efficientnet_v2_s", 224), ("regnet_x_400mf", 224), ("regnet_y_400mf", 224), ("convnext_tiny", 224),
    ("swin_t", 224), ("swin_v2_t", 256), ("maxvit_t", 224), ("vit_b_16", 224),
]
TIMM = [
    ("resnet18", 224), ("efficientnet_b0", 224), ("convnext_atto", 224), ("regnety_002", 224),
    ("mobilenetv3_small_050", 224), ("vit_tiny_patch16_224", 224), ("deit_tiny_patch16_224", 224),
    ("deit_tiny_distilled_patch16_224", 224), ("vit_small_patch16_224.augreg_in21k", 224),
    ("swin_tiny_patch4_window7_224", 224), ("maxvit_rmlp_pico_rw_256", 256), ("mixer_s16_224", 224),
    ("fastvit_t8", 256),
]


def cases() -> list[tuple[str, Callable[[], torch.nn.Module], tuple[int, ...]]]:
    import timm
    import torchvision

    found = [(f"torchvision {name}", lambda n=name: getattr(torchvision.models, n)(weights=None, **_kwargs(n)),
              (1, 3, size, size)) for name, size in TORCHVISION]
    found += [(f"timm {name}", lambda n=name: timm.create_model(n, pretrained=False), (1, 3, size, size))
              for name, size in TIMM]
    found += [
        ("torchvision r3d_18 (video)", lambda: torchvision.models.video.r3d_18(weights=None), (1, 3, 8, 64, 64)),
        ("1-D CNN (interpkit.testing.Conv1dNet)", _conv1d, (1, 2, 64)),
        ("torchvision fcn_resnet50 (segmentation)", lambda: torchvision.models.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None), (1, 3, 224, 224)),
        ("torchvision fasterrcnn_mobilenet_v3_large_fpn (detection)",
         lambda: torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None),
         (1, 3, 224, 224)),
    ]
    return found


def _kwargs(name: str) -> dict:
    return {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}


def _conv1d() -> torch.nn.Module:
    from interpkit.testing import Conv1dNet

    return Conv1dNet()


def choice(make: Callable[[], torch.nn.Module], shape: tuple[int, ...]) -> tuple[str, str, tuple[int, ...]]:
    """(layer, layout, grid) that ``layer=None`` picks."""
    from interpkit.core import ModelInputs, choose_layer, class_scores, evaluation

    torch.manual_seed(0)
    model = make()
    with torch.no_grad():  # a trained head is never all zeros (torchvision's ViT starts so)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and not module.weight.any():
                module.weight.normal_(0, 0.02)
    inputs = ModelInputs(args=([torch.randn(shape[1:]).unsqueeze(0)] if len(shape) else ()))
    with evaluation(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = choose_layer(model, inputs, lambda out: class_scores(out).max(dim=1).values)
        captured = {}
        handle = layer.module.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
        with torch.no_grad():
            inputs.run(model)
        handle.remove()
    output = captured["out"]
    grid = layer.grid(output, shape[2:])
    return layer.name, type(layer.layout).__name__ + _prefix(layer.layout, output, shape[2:]), tuple(grid.shape[2:])


def _prefix(layout, output: torch.Tensor, input_grid: tuple[int, ...]) -> str:
    if not hasattr(layout, "resolve"):
        return ""
    return f"(prefix={layout.resolve(output.shape[1], input_grid)[0]})"


def main() -> None:
    print("| model | input | chosen layer | layout | grid |")
    print("| --- | --- | --- | --- | --- |")
    for label, make, shape in cases():
        try:
            name, layout, grid = choice(make, shape)
            print(f"| {label} | {' x '.join(map(str, shape[1:]))} | `{name}` | {layout} | {' x '.join(map(str, grid))} |")
        except Exception as error:  # the table says so rather than stopping
            print(f"| {label} | {' x '.join(map(str, shape[1:]))} | error: {type(error).__name__}: {error} | | |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
