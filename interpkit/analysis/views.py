"""The random views an optimised image is seen through (transformation robustness, lucent's
``standard_transforms``), composed into one affine resampling per image and step, and the
per-image generators they are drawn from."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core import check_int
from ..errors import InputError


@dataclass(frozen=True)
class Transforms:
    """Transformation robustness, lucent's ``standard_transforms`` by default: each image, each
    step, is padded by ``pad`` pixels of grey (0.5), translated by a random (0 .. jitter[0] - 1)
    pixels in x and y, scaled by one of ``scales`` and rotated by one of ``angles`` (degrees,
    anticlockwise) about the centre, then translated by (0 .. jitter[1] - 1) pixels. The four are composed into
    one affine resampling (bilinear), which also resamples to the model's input size."""

    pad: int = 12
    jitter: tuple[int, int] = (8, 4)
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
    angles: tuple[float, ...] = tuple(float(a) for a in range(-10, 11)) + (0.0,) * 5

    def __post_init__(self) -> None:
        check_int("pad", self.pad, minimum=0)
        if not isinstance(self.jitter, (tuple, list)) or len(self.jitter) != 2:
            raise InputError(f"jitter is (before, after) in pixels, got {self.jitter!r}")
        for value in self.jitter:
            check_int("jitter", value)
        for name, values, valid in (("scales", self.scales, lambda v: 0 < v < math.inf),
                                    ("angles", self.angles, math.isfinite)):
            if not isinstance(values, (tuple, list)) or not values or any(
                    isinstance(v, bool) or not isinstance(v, numbers.Real) or not valid(v) for v in values):
                raise InputError(f"{name} must be a non-empty tuple of finite numbers (scales positive), got {values!r}")


STANDARD_TRANSFORMS = Transforms()
NO_TRANSFORMS = Transforms(pad=0, jitter=(1, 1), scales=(1.0,), angles=(0.0,))


def image_generators(seed: int, count: int) -> list[torch.Generator]:
    """One generator per image, seeded from (seed, image number) through NumPy's SeedSequence:
    an image's draws do not depend on how many images there are."""
    states = (np.random.SeedSequence((seed, i)).generate_state(1, np.uint64)[0] >> np.uint64(1) for i in range(count))
    return [torch.Generator().manual_seed(int(state)) for state in states]


def random_views(transforms: Transforms, steps: int, size: tuple[int, int],
                 generators: Sequence[torch.Generator]) -> torch.Tensor:
    """The affine matrices (steps, images, 2, 3) for ``F.affine_grid`` that sample each step's
    view of each image, drawn from the image's generator: output coordinates cover the padded
    canvas, source coordinates the image (outside it, grey)."""
    draws = []
    for generator in generators:
        before = torch.randint(transforms.jitter[0], (steps, 2), generator=generator)
        scale = torch.randint(len(transforms.scales), (steps,), generator=generator)
        angle = torch.randint(len(transforms.angles), (steps,), generator=generator)
        after = torch.randint(transforms.jitter[1], (steps, 2), generator=generator)
        draws.append((before, scale, angle, after))
    before, scale, angle, after = (torch.stack(d, dim=1) for d in zip(*draws))
    scales = torch.tensor(transforms.scales, dtype=torch.float64)[scale]
    angles = torch.tensor(transforms.angles, dtype=torch.float64)[angle]
    return affine(transforms.pad, size, before.double(), scales, angles, after.double())


def affine(pad: int, size: tuple[int, int], before: torch.Tensor, scales: torch.Tensor, angles: torch.Tensor,
           after: torch.Tensor) -> torch.Tensor:
    """Matrices mapping an output point q (normalised over the padded canvas) to the source point
    p = R(a) (q - after) / s - before in pixels from the centre, normalised over the image: the
    picture moves by ``before``, is scaled by s and turned by a degrees anticlockwise about the
    centre, then moves by ``after``."""
    h, w = size
    radians = torch.deg2rad(angles)
    cos, sin = radians.cos() / scales, radians.sin() / scales
    # x right, y down: sampling through R(a) turns the picture anticlockwise on screen (kornia's sense)
    inverse = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    to_image = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
    from_canvas = torch.tensor([(w + 2 * pad) / 2.0, (h + 2 * pad) / 2.0], dtype=torch.float64)
    matrix = to_image[:, None] * inverse * from_canvas
    shift = -to_image * ((inverse @ after[..., None])[..., 0] + before)
    return torch.cat([matrix, shift[..., None]], dim=-1)


def seen(images: torch.Tensor, theta: torch.Tensor | None, input_size: tuple[int, ...]) -> torch.Tensor:
    """What the model sees of ``images``: one bilinear affine resampling with grey outside the
    image, or the images as they are (``theta`` None and no resizing)."""
    if theta is None:
        return images
    grid = F.affine_grid(theta.to(images), [len(images), images.shape[1], *input_size], align_corners=False)
    return F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5
