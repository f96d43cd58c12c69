"""Quick start: GradCAM for every class of a model in one call, saved as overlays.

Run: python docs/examples/quickstart.py [OUTPUT_DIR]
"""

import sys
from pathlib import Path

import torch
import torchvision

import interpkit
from interpkit.viz.images import write_png

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=5)  # any nn.Module works; weights are random here
images = torch.rand(2, 3, 224, 224)

explanation = interpkit.GradCAM(model)(images, target="all")  # one forward, one batched backward
print(f"method={explanation.method} layer={explanation.layer} maps={tuple(explanation.maps.shape)}")
print("scores:", explanation.scores.round(decimals=3).tolist())

out = Path(sys.argv[1] if len(sys.argv) > 1 else "interpkit-quickstart")
out.mkdir(parents=True, exist_ok=True)
overlays = explanation.overlay(images, alpha=0.5)  # uint8 RGB (N, K, H, W, 3)
for n in range(overlays.shape[0]):
    for k in range(overlays.shape[1]):
        write_png(out / f"sample{n}_class{k}.png", overlays[n, k])
print(f"wrote {overlays.shape[0] * overlays.shape[1]} overlays to {out}/")
print("registered explainers:", ", ".join(interpkit.list_explainers()))
