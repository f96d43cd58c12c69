"""Make every figure of the documentation from the bundled models and images (public API only).

Run: python docs/scripts/make_figures.py [OUTPUT_DIR]   (default: docs/images)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import interpkit
from interpkit import get_model, get_weights
from interpkit.data import caltech5
from interpkit.viz import gradient_images, plot_image_grid, to_uint8_images
from interpkit.viz.images import write_png

MODEL = "caltech5_arch2"


def main(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    weights = get_weights(MODEL)
    model = get_model(MODEL, weights=weights).eval()
    transform = weights.transforms()
    test = caltech5("test", transform=transform)
    picks = [test.labels.index(c) for c in range(len(weights.meta["categories"]))]
    images = torch.stack([test[i][0] for i in picks])
    pictures = to_uint8_images(transform.denormalize(images))
    classes = weights.meta["categories"]
    written = []

    def save(name: str, figure) -> None:
        path = out / f"{name}.png"
        figure.savefig(path, dpi=80)
        written.append(path)

    cam = interpkit.GradCAM(model)(images, target="all")
    overlays = cam.overlay(pictures, alpha=0.45)
    save("gradcam", plot_image_grid([[pictures[i], *overlays[i]] for i in range(5)], classes,
                                    ["image"] + [f"for {c}" for c in classes], panel_inches=1.2))

    rows = []
    for cls in (interpkit.GuidedBackprop, interpkit.Deconvnet, interpkit.GuidedGradCAM):
        maps = cls(model)(images, target=list(range(5))).maps
        rows.append([*gradient_images(maps)[:, 0]])
    save("gradients", plot_image_grid([list(pictures), *rows], ["image", "guided backprop", "deconvnet",
                                                              "guided GradCAM"], classes, panel_inches=1.2))

    maps = interpkit.feature_maps(model, images[4:5])
    save("feature_maps", maps.figure("features.4"))

    patches = interpkit.MaxActivatingPatches(model, layer="features.7")(images, target=list(range(5)))
    save("patches", patches.figure(pictures, sample=3, title="scorpion: the patch behind the class score"))

    top = interpkit.top_patches(model, "features.7", caltech5("train", transform=transform), k=6,
                                channels=list(range(6)), progress=False)
    save("top_patches", top.figure(crop_pixels=40))

    optimised = interpkit.visualise(model, interpkit.analysis.channel("features.7", range(8)), steps=256,
                                    preprocess=transform.standardize, input_size=transform.size)
    save("visualise", optimised.figure(panel_inches=1.3))
    written.append(out / "sample.png")
    write_png(out / "sample.png", pictures[4])
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "images"
    for path in main(target):
        print(path)
