"""Maximally activating patches: the input patch behind a layer position that drives a target.

The study traced "the neuron that was maximally activated in the output layer back to the patch
in the original image that caused it". Here that is made exact: for each image and target, the
position of ``layer`` whose channels contribute most to the target score, by gradient times
activation summed over channels (the first-order share of the score that flows through that
position), and its exact receptive field from ``interpkit.receptive_field``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from ..analysis import ReceptiveField, receptive_field
from ..core import (
    Call,
    ChannelsFirst,
    Explanation,
    InputsLike,
    LayerExplainer,
    LayerLike,
    MapKind,
    TargetLike,
    check_int,
    display,
    model_cache,
)
from ..errors import InputError, LayerError


@dataclass
class PatchExplanation(Explanation):
    """An Explanation whose ``maps`` (N, K, h, w) are the per-position contributions, with the
    ``k`` best positions (N, K, k, 2) as (y, x) and their clipped ``boxes`` (N, K, k, 4) as
    (top, left, bottom, right) input pixels, best first."""

    positions: torch.Tensor = field(default=None)  # type: ignore[assignment]
    boxes: torch.Tensor = field(default=None)  # type: ignore[assignment]
    receptive_field: ReceptiveField | None = None

    def box(self, sample: int = 0, target: int = 0, rank: int = 0) -> tuple[int, int, int, int]:
        """One box as ints ``(top, left, bottom, right)``."""
        return tuple(int(v) for v in self.boxes[sample, target, rank].tolist())  # type: ignore[return-value]

    def crops(self, images: torch.Tensor, rank: int = 0) -> list[list[torch.Tensor]]:
        """``crops[n][k]``: the patch of ``images[n]`` (C, H, W) inside the box of that rank."""
        if images.dim() != 4 or images.shape[0] != self.boxes.shape[0]:
            raise InputError(f"crops need the {self.boxes.shape[0]} explained images as (N, C, H, W)")
        return [[_crop(images[n], self.box(n, k, rank)) for k in range(self.boxes.shape[1])]
                for n in range(self.boxes.shape[0])]

    def figure(self, images: Any, sample: int = 0, target: int = 0, title: str | None = None):
        """The study's figure 7/9 for one image: the image with the box drawn, and the patch."""
        viz = display()
        picture = viz.to_uint8_images(images)[sample]
        return viz.plot_patch(picture, self.box(sample, target), title=title)


def _crop(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, bottom, right = box
    return image[:, top:bottom, left:right]


class MaxActivatingPatches(LayerExplainer):
    """For each image and target: where in ``layer`` the target comes from, as input boxes.

    ``maps`` are ``sum_c A_c * dS/dA_c`` per position (N, K, h, w); the ``k`` best positions
    are kept, ties broken towards the first position in row-major order.
    """

    name = "max_activating_patches"
    supports = frozenset({"2d"})  # receptive fields are traced with one image input

    def __init__(self, model: nn.Module, layer: LayerLike = None, k: int = 5) -> None:
        super().__init__(model, layer)
        self.k = check_int("k", k)

    def __call__(self, inputs: InputsLike, target: TargetLike = None, *,
                 attribute_to: int | str | None = None) -> PatchExplanation:
        return cast(PatchExplanation, super().__call__(inputs, target, attribute_to=attribute_to))

    def explain(self, call: Call) -> PatchExplanation:
        """Explain a validated call; the model is already in eval mode."""
        inputs = call.x
        found = self.layer_gradients(call)
        if inputs.dim() != 4 or not isinstance(self.resolve(call)[0].layout, ChannelsFirst):
            raise LayerError(f"{type(self).__name__} traces receptive fields, which exist for channels-first layers of "
                             f"image models; layer '{found.layer}' of inputs {tuple(inputs.shape)} is not one")
        contribution = (found.gradients * found.activation.unsqueeze(1)).sum(dim=2)
        height, width = contribution.shape[-2:]
        order = torch.sort(contribution.flatten(2), dim=2, descending=True, stable=True).indices
        best = order[..., : min(self.k, height * width)]
        positions = torch.stack([best // width, best % width], dim=-1)
        field_ = self._receptive_field(found.layer, tuple(inputs.shape[-2:]), inputs.shape[1])
        plain = self.result(contribution, found.selection, MapKind.LAYER_GRID, found.layer)
        return PatchExplanation(**vars(plain), positions=positions, boxes=field_.boxes(positions),
                                receptive_field=field_)

    def _receptive_field(self, name: str, size: tuple[int, ...], channels: int) -> ReceptiveField:
        """Traced once per model, layer, size, channels and the modules' settings (their repr: a
        dilation changed in place changes it); again after a module is replaced."""
        cache = model_cache(self.model)
        key = ("receptive field", name, (int(size[0]), int(size[1])), channels, repr(self.model))
        if key not in cache:
            cache[key] = receptive_field(self.model, name, key[2], in_channels=channels)
        return cache[key]
