"""Feature visualisation by optimisation (Olah et al., Distill 2017): images that excite units.

``visualise(model, objective)`` optimises one image per unit of the objective, all of them as
one batch (one forward and one backward per step for every image), in chunks of ``max_batch``
images. An image is parametrised as lucent parametrises it: a spectrum scaled by 1/f and
inverted by a real FFT (``spectral_image``) or plain pixels, decorrelated in colour and passed
through a sigmoid into [0, 1]. Each step every image is seen through a random view
(``Transforms``: padding, jitter, scale and rotation with lucent's defaults) drawn for that image
and step from ``seed``, so an image's result depends on its place in the list of units and the
seed, not on the other images or the chunking. The forward stops after the last layer the
objective reads; gradients reach the image only (the model's parameters get none), and the
model is held and restored as by every explainer.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core import (
    LayerChoice,
    ModelInputs,
    check_flag,
    check_int,
    check_number,
    check_seed,
    class_scores,
    display,
    evaluation,
    forward_hooks,
    layer_choices,
    mixes_samples,
    model_device,
)
from ..errors import InputError, LayerError
from .objectives import OUTPUT, Activations, Objective
from .views import STANDARD_TRANSFORMS, Transforms, affine, image_generators, random_views, seen

#: lucent's square root of ImageNet's colour covariance (its ``color_correlation_svd_sqrt``)
COLOUR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
#: the matrix that colours a decorrelated image: the above over its largest column norm
DECORRELATION = COLOUR_CORRELATION / COLOUR_CORRELATION.norm(dim=0).max()
SPECTRUM_DIVISOR = 4.0  # lucid's constant: the inverse FFT's image is divided by it (less saturation)
INITIAL_SD = 0.01  # lucent's standard deviation of the initial spectrum or pixels


def decorrelate_colours(image: torch.Tensor) -> torch.Tensor:
    """(N, 3, *grid) in decorrelated colour -> RGB: each pixel's colour multiplied by ``DECORRELATION``."""
    return torch.einsum("ck,nk...->nc...", DECORRELATION.to(image), image)


def _grid_size(size: Any, name: str = "size") -> tuple[int, ...]:
    """An int as a square image's (size, size); a tuple as the grid of 1 to 3 dims it names."""
    values = (size, size) if isinstance(size, numbers.Integral) and not isinstance(size, bool) else size
    if not isinstance(values, (tuple, list)) or not 1 <= len(values) <= 3:
        raise InputError(f"{name} must be an int or a tuple of 1 to 3 ints, got {size!r}")
    return tuple(check_int(name, v) for v in values)


def frequency_scale(size: Sequence[int], decay_power: float = 1.0) -> torch.Tensor:
    """1 / max(f, 1 / max(size)) ** decay_power for the frequencies f of a real FFT of ``size``
    (shape (*size[:-1], size[-1] // 2 + 1)): lucid's 1/f scaling, on any grid's rank."""
    axes = [torch.fft.fftfreq(s, dtype=torch.float64) for s in size[:-1]] + [
        torch.fft.rfftfreq(size[-1], dtype=torch.float64)]
    squares = sum(f.reshape([-1 if i == d else 1 for i in range(len(axes))]) ** 2 for d, f in enumerate(axes))
    frequencies = torch.as_tensor(squares).sqrt()
    return 1.0 / frequencies.clamp_min(1.0 / max(size)) ** decay_power


def spectral_image(spectrum: torch.Tensor, size: int | Sequence[int], decay_power: float = 1.0,
                   decorrelate: bool = True) -> torch.Tensor:
    """The image of a spectrum (N, C, *size[:-1], size[-1] // 2 + 1, 2) (real and imaginary
    parts last): scaled by ``frequency_scale``, inverted by a real FFT with ``norm="ortho"``,
    divided by 4, colours decorrelated (C = 3) and passed through a sigmoid: (N, C, *size) in
    [0, 1], as lucent's ``fft_image`` and ``to_valid_rgb`` make it."""
    grid = _grid_size(size)
    check_number("decay_power", decay_power)
    expected = (*grid[:-1], grid[-1] // 2 + 1, 2)
    if not isinstance(spectrum, torch.Tensor) or not spectrum.is_floating_point() or tuple(
            spectrum.shape[2:]) != expected or spectrum.dim() != len(expected) + 2:
        shape = tuple(spectrum.shape) if isinstance(spectrum, torch.Tensor) else type(spectrum).__name__
        raise InputError(f"a spectrum for size {grid} is a floating tensor (N, C, {', '.join(map(str, expected))}), "
                         f"got {shape}")
    scale = frequency_scale(grid, decay_power).to(spectrum)
    scaled = torch.view_as_complex((spectrum * scale[..., None]).contiguous())
    image = torch.fft.irfftn(scaled, s=grid, dim=tuple(range(2, 2 + len(grid))), norm="ortho") / SPECTRUM_DIVISOR
    return pixel_image(image, decorrelate)


def pixel_image(pixels: torch.Tensor, decorrelate: bool = True) -> torch.Tensor:
    """Pixels (N, C, *grid) -> image in [0, 1]: colours decorrelated (C = 3), then a sigmoid."""
    if not isinstance(pixels, torch.Tensor) or not pixels.is_floating_point() or pixels.dim() < 3:
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise InputError(f"pixels must be a floating tensor (N, C, *grid), got {shape}")
    if decorrelate:
        if pixels.shape[1] != 3:
            raise InputError(f"colour decorrelation is defined for 3 channels; got {pixels.shape[1]}: "
                             "pass decorrelate=False")
        pixels = decorrelate_colours(pixels)
    return torch.sigmoid(pixels)


@dataclass(frozen=True)
class Visualisation:
    """The optimised images (N, C, *size) in [0, 1] on the model's device, the objective's
    score of each on its final image seen without transforms (N,), and what each image shows."""

    images: torch.Tensor
    scores: torch.Tensor
    labels: tuple[str, ...]

    def figure(self, ncols: int | None = None, panel_inches: float = 1.2) -> Any:
        """A contact sheet: every image with its label, as a matplotlib Figure."""
        return display().plot_contact_sheet(self.images, list(self.labels), ncols=ncols, panel_inches=panel_inches)

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``unit_{i}.png`` per image and ``contact_sheet.png`` into ``out_dir``; returns the paths."""
        try:
            return display().save_visualisation(self, out_dir)
        except OSError as error:
            raise InputError(f"cannot write the images into {out_dir}: {error.strerror or error}") from None


class _Enough(BaseException):
    """Raised by the hook of the last layer an objective reads: the rest of the forward is unused.
    A BaseException, so a model's own ``except Exception`` cannot swallow it."""


def read(model: nn.Module, x: torch.Tensor, objective: Objective, choices: dict[Any, LayerChoice],
         stop_early: bool) -> Activations:
    """One forward of ``x``: the activations ``objective`` reads, as channels-first grids (and
    the class scores for ``OUTPUT``); with ``stop_early`` the forward ends at the last of them.
    A whole forward that fails after every layer read has run (a head built for another input
    size) still gives them; a layer called again after that point cannot be seen."""
    outputs: dict[nn.Module, Any] = {}
    calls: dict[nn.Module, int] = {}
    modules = {choice.module for choice in choices.values()}
    stop = stop_early and OUTPUT not in objective.reads

    def hook(module: nn.Module, _inputs: tuple, output: Any) -> Any:
        calls[module] = calls.get(module, 0) + 1
        outputs.setdefault(module, output)
        if stop and len(outputs) == len(modules):
            raise _Enough
        return output.clone() if isinstance(output, torch.Tensor) else None  # in-place ops later leave ours alone

    model_output = None
    with forward_hooks(modules, hook):
        try:
            model_output = ModelInputs(args=(x,)).run(model)
        except _Enough:
            pass
        except InputError:
            # a head built for another input size fails after the layers read: the rest is unused
            if OUTPUT in objective.reads or len(outputs) < len(modules):
                raise
    grid = tuple(x.shape[2:])
    activations: dict[Any, torch.Tensor] = {}
    for key, choice in choices.items():
        output = outputs.get(choice.module)
        if calls.get(choice.module, 0) != 1:
            raise LayerError(f"layer '{choice.name}' runs {calls.get(choice.module, 0)} times in one forward; an "
                             "objective reads a layer that runs once")
        if not isinstance(output, torch.Tensor) or output.shape[0] != len(x):
            raise LayerError(f"layer '{choice.name}' does not give a tensor with one row per image; choose another")
        activations[key] = choice.grid(output, grid)
    if OUTPUT in objective.reads:
        activations[OUTPUT] = class_scores(model_output)
    return activations


def _scores(model: nn.Module, objective: Objective, choices: dict[Any, LayerChoice], x: torch.Tensor,
            rows: torch.Tensor, stop_early: bool) -> torch.Tensor:
    scores = objective.score(read(model, x, objective, choices, stop_early), rows)
    if scores.shape != (len(rows),):
        raise InputError(f"the objective gave scores of shape {tuple(scores.shape)} for {len(rows)} images")
    return scores


@dataclass(frozen=True)
class _Setup:
    """How the images are made and seen, fixed for one call and shared by its chunks."""

    make: Callable[[torch.Tensor], torch.Tensor]
    initial: torch.Tensor  # (N, *one image's parameters), float64 on the CPU
    steps: int
    preprocess: Callable[[torch.Tensor], torch.Tensor]
    views: torch.Tensor | None  # (steps, N, 2, 3), or (1, 1, 2, 3) to resize only; None: seen as made
    final: torch.Tensor | None  # (1, 1, 2, 3): the view without transforms
    input_size: tuple[int, ...]
    dtype: torch.dtype  # the parameters'
    model_dtype: torch.dtype

    def view(self, step: int, rows: torch.Tensor) -> torch.Tensor | None:
        """The matrices of the images numbered ``rows`` at ``step``."""
        if self.views is None:
            return None
        if len(self.views) == 1:
            return self.views[0, 0].expand(len(rows), 2, 3)
        return self.views[step, rows]

    def input(self, images: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        """The model's input for ``images`` seen through ``theta``."""
        return self.preprocess(seen(images, theta, self.input_size)).to(self.model_dtype)


def visualise(model: nn.Module, objective: Objective, *, size: int | Sequence[int] = 128, channels: int = 3,
              images: int | None = None, steps: int = 512, lr: float = 0.05, parametrisation: str = "spectral",
              decorrelate: bool | None = None, transforms: Transforms | None = STANDARD_TRANSFORMS,
              preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
              input_size: int | Sequence[int] | None = None, seed: int = 0, max_batch: int = 64,
              progress: bool = False) -> Visualisation:
    """Images of ``size`` (an int for a square, or the grid of 1 to 3 dims) with ``channels``
    channels that maximise ``objective``, one per unit it names (or ``images`` of them for an
    objective of single units, lucent's ``batch``), by ``steps`` steps of Adam at ``lr``.

    ``parametrisation`` is ``"spectral"`` (``spectral_image``) or ``"pixel"`` (``pixel_image``);
    ``decorrelate`` defaults to True for 3 channels. ``transforms`` (2-D images only; None for
    none) are drawn for each image and step; ``preprocess`` maps the [0, 1] image to the model's
    input (its normalisation; default none); ``input_size`` resamples what the model sees (2-D;
    default the padded canvas, size + 2 * pad). ``max_batch`` images are optimised at a time;
    an objective with ``diversity`` needs all of them in one batch. ``progress`` shows a bar of steps.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(objective, Objective):
        raise InputError("objective must be an Objective: channel(...), neuron(...), direction(...), "
                         "class_logit(...), diversity(...) or a combination")
    count = _image_count(objective, images)
    check_int("max_batch", max_batch)
    if objective.couples and count > max_batch:
        raise InputError(f"diversity couples all {count} images, so they are optimised in one batch: raise max_batch "
                         f"to {count} or more")
    if check_number("lr", lr) == 0:
        raise InputError("lr must be positive, got 0")
    generators = image_generators(check_seed(seed), count)
    setup = _setup(model, size, channels, check_int("steps", steps), parametrisation, decorrelate, transforms,
                   preprocess, input_size, generators)
    choices = _choices(model, objective)
    device = model_device(model)
    if mixes_samples(model) and not objective.couples:  # batch statistics: each image alone, as explainers do
        max_batch = 1
    made, scores = [], []
    bar = tqdm(total=setup.steps * -(-count // max_batch), desc="visualise", unit="step",
               disable=not check_flag("progress", progress))
    with evaluation(model), bar, torch.inference_mode(False), torch.enable_grad():  # the caller's no_grad aside
        for start in range(0, count, max_batch):
            rows = torch.arange(start, min(start + max_batch, count), device=device)
            params = setup.initial[start:start + len(rows)].to(device, setup.dtype).requires_grad_(True)
            _optimise(model, objective, choices, setup, params, rows, float(lr), bar.update)
            with torch.no_grad():
                image = setup.make(params)
                final = None if setup.final is None else setup.final[0, 0].expand(len(rows), 2, 3)
                scores.append(_scores(model, objective, choices, setup.input(image, final), rows, stop_early=True))
            made.append(image)
    joined = torch.cat(scores)
    joined = joined if joined.dtype == torch.float64 else joined.float()
    result = Visualisation(torch.cat(made), joined, tuple(objective.label(i) for i in range(count)))
    if not bool(torch.isfinite(result.images).all() & torch.isfinite(result.scores).all()):  # one read, at the end
        raise InputError("the optimisation diverged: the objective's gradient or score became infinite or NaN; lower "
                         "lr, or check the model at the visualised input size")
    return result


def _optimise(model: nn.Module, objective: Objective, choices: dict[Any, LayerChoice], setup: _Setup,
              params: torch.Tensor, rows: torch.Tensor, lr: float, done: Callable[[int], Any]) -> None:
    """Adam on ``params`` (the chunk's images), maximising the sum of their scores: each image's
    gradient is its own score's, as if it were optimised alone. The first forward runs whole,
    checking the layers and the objective before any step."""
    optimiser = torch.optim.Adam([params], lr=lr)
    for step in range(setup.steps):
        x = setup.input(setup.make(params), setup.view(step, rows))
        scores = _scores(model, objective, choices, x, rows, stop_early=step > 0)
        (gradient,) = torch.autograd.grad(scores.sum(), params, allow_unused=True) if scores.requires_grad else (None,)
        if gradient is None:
            raise InputError("the objective does not depend on the image: preprocess or the model cuts the gradient "
                             "(torch.no_grad, .detach()) before the layers it reads")
        params.grad = gradient.neg_()
        optimiser.step()
        done(1)


def _setup(model: nn.Module, size: Any, channels: Any, steps: int, parametrisation: Any, decorrelate: Any,
           transforms: Any, preprocess: Any, input_size: Any, generators: Sequence[torch.Generator]) -> _Setup:
    grid = _grid_size(size)
    check_int("channels", channels)
    colour = channels == 3 if decorrelate is None else check_flag("decorrelate", decorrelate)
    if colour and channels != 3:
        raise InputError(f"colour decorrelation is defined for 3 channels, not {channels}; pass decorrelate=False")
    make: Callable[[torch.Tensor], torch.Tensor]
    if parametrisation == "spectral":
        shape = (channels, *grid[:-1], grid[-1] // 2 + 1, 2)
        make = lambda p: spectral_image(p, grid, decorrelate=colour)  # noqa: E731
    elif parametrisation == "pixel":
        shape = (channels, *grid)
        make = lambda p: pixel_image(p, colour)  # noqa: E731
    else:
        raise InputError(f"parametrisation must be 'spectral' or 'pixel', got {parametrisation!r}")
    if transforms is not None and not isinstance(transforms, Transforms):
        raise InputError(f"transforms must be a Transforms (STANDARD_TRANSFORMS) or None, got {transforms!r}")
    if preprocess is not None and not callable(preprocess):
        raise InputError(f"preprocess must be a callable from the [0, 1] image to the model's input, got {preprocess!r}")
    # each image's first draws are its start, so it starts alike whatever the steps and transforms
    initial = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in generators]) * INITIAL_SD
    pad = transforms.pad if transforms is not None else 0
    seen_size = tuple(s + 2 * pad for s in grid) if input_size is None else _grid_size(input_size, "input_size")
    if (transforms is not None or seen_size != grid) and len(grid) != 2:
        raise InputError(f"transforms and input_size resample 2-D images; for a {len(grid)}-D grid pass "
                         "transforms=None and no input_size")
    if len(seen_size) != len(grid):
        raise InputError(f"input_size {seen_size} does not have the image's {len(grid)} dimensions")
    device = model_device(model)
    model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    dtype = torch.float64 if model_dtype == torch.float64 else torch.float32
    views_ = final = None
    if transforms is not None or seen_size != grid:
        zero = torch.zeros(1, 1, dtype=torch.float64)
        final = affine(pad, (grid[0], grid[1]), zero[..., None].expand(1, 1, 2), zero + 1, zero,
                       zero[..., None].expand(1, 1, 2)).to(device, dtype)
        views_ = final if transforms is None else random_views(transforms, steps, (grid[0], grid[1]), generators).to(
            device, dtype)
    return _Setup(make, initial, steps, _checked(preprocess), views_, final, seen_size, dtype, model_dtype)


def _checked(preprocess: Callable[[torch.Tensor], torch.Tensor] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``preprocess`` (or the identity), its result refused unless it is a batch of tensors."""
    if preprocess is None:
        return lambda x: x

    def run(x: torch.Tensor) -> torch.Tensor:
        out = preprocess(x)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or len(out) != len(x):
            raise InputError(f"preprocess must return a floating tensor with one row per image, got "
                             f"{type(out).__name__ if not isinstance(out, torch.Tensor) else tuple(out.shape)}")
        return out

    return run


def _image_count(objective: Objective, images: int | None) -> int:
    check_int("images", images, none="one per unit of the objective")
    if objective.images is not None and images is not None and images != objective.images:
        raise InputError(f"the objective defines {objective.images} images; images={images} does not match")
    return objective.images or images or 1


def _choices(model: nn.Module, objective: Objective) -> dict[Any, LayerChoice]:
    """Each layer the objective reads, resolved with its layout (a LayerError names a wrong one)."""
    choices = {}
    for spec in objective.reads:
        if spec != OUTPUT:
            found = layer_choices(model, spec)
            assert found is not None
            choices[spec] = found[0]
    return choices
