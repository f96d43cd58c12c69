"""How a layer's output lies over the input's grid: channels first, channels last, or tokens.

A layout turns a layer output into a channels-first grid (N, C, *grid) and is applied alike to
activations, their gradients and ``Neuron`` indexing. It is only a re-indexing (tokens before
the grid, such as a class token, are left out), so the gradient of a score with respect to the
re-indexed grid is the re-indexed gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

from ..errors import LayerError

MAX_PREFIX_TOKENS = 16  # class, distillation and register tokens: more is not a vision transformer


class Layout:
    """Base of the layouts; ``grid(tensor, input_grid, lead)`` gives (lead dims..., C, *grid)."""

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, name: str = "") -> torch.Tensor:
        """``tensor`` (``lead`` batch-like dims, then the layer's output) as (lead dims, C, *grid);
        a LayerError naming the layer ``name`` when it does not have this layout."""
        raise NotImplementedError


@dataclass(frozen=True)
class ChannelsFirst(Layout):
    """(N, C, *grid) as it is. Without a layout interpkit also checks that the grid lines up with
    the input (same rank, no larger, one common stride); given explicitly, only the rank is checked."""

    checked: bool = False
    #: set when the producing module (a convolution, pooling, batch norm) shows it is channels first
    known: bool = False

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, name: str = "") -> torch.Tensor:
        """See ``Layout.grid``."""
        grid = tuple(tensor.shape[lead + 1:])
        if not input_grid:
            raise LayerError(f"inputs (N, D) have no grid to map layer '{name}' onto; use an input-gradient method "
                             "such as GuidedBackprop")
        if len(grid) != len(input_grid):
            raise LayerError(
                f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample, which is not a channels-first "
                f"grid of the input's {len(input_grid)} spatial dimension(s); give its layout with the layer, e.g. "
                f"layer=('{name}', TokenGrid()) for (N, tokens, dim) or ('{name}', ChannelsLast()) for (N, *grid, C)"
            )
        if not self.checked or self.known or (aligned(grid, input_grid)
                                              and not other_readings(tensor.shape[lead:], input_grid)):
            return tensor
        if history_hint(tensor) == "first":  # made by a convolution or pooling: a map whatever its strides
            return tensor
        if aligned(grid, input_grid):
            raise LayerError(
                f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample, which lines up with the input "
                f"read as channels first and also as {' or '.join(other_readings(tensor.shape[lead:], input_grid))}; "
                f"give its layout with the layer: ('{name}', ChannelsFirst()) to confirm channels first, or the other"
            )
        raise LayerError(
            f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample: read as channels first its grid "
            f"{grid} does not line up with the input's {tuple(input_grid)} (no common stride), so it is not a map "
            f"of the input; give its layout with the layer (TokenGrid(), ChannelsLast(), or ChannelsFirst() to "
            "insist)"
        )


@dataclass(frozen=True)
class ChannelsLast(Layout):
    """(N, *grid, C), as Swin, ConvNeXt blocks and MaxViT partitions keep their activations."""

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, name: str = "") -> torch.Tensor:
        """See ``Layout.grid``."""
        last, first = tuple(tensor.shape[lead:-1]), tuple(tensor.shape[lead + 1:])
        if (tensor.dim() - lead - 1 != len(input_grid) or not aligned(last, input_grid)
                or misfit(first, input_grid) < misfit(last, input_grid)):
            raise LayerError(f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample, not a channels-last "
                             f"grid (*grid, C) lined up with the input's {tuple(input_grid)}; if it is channels first "
                             f"after all, give ('{name}', ChannelsFirst())")
        return tensor.movedim(-1, lead)


@dataclass(frozen=True)
class TokenGrid(Layout):
    """(N, tokens, D): ``prefix`` tokens (class, distillation, registers) then a row-major grid.

    With ``prefix="auto"`` and ``grid=None`` both are derived from the token count and the input
    size: the grid must tile the input with one patch size, and only one reading may do so. Give
    them when they cannot be (``token_layout(model)`` reads them from timm, torchvision and
    HuggingFace vision transformers).
    """

    prefix: Union[int, str] = "auto"
    grid_size: Union[tuple[int, ...], None] = None

    def __post_init__(self) -> None:
        if self.prefix != "auto" and (isinstance(self.prefix, bool) or not isinstance(self.prefix, int)
                                      or self.prefix < 0):
            raise LayerError(f"TokenGrid prefix must be 'auto' or a non-negative int, not {self.prefix!r}")
        if self.grid_size is not None and (
                not isinstance(self.grid_size, tuple) or not self.grid_size
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in self.grid_size)):
            raise LayerError(f"TokenGrid grid_size must be a tuple of positive ints such as (14, 14), "
                             f"not {self.grid_size!r}")

    def resolve(self, tokens: int, input_grid: Sequence[int], name: str = "") -> tuple[int, tuple[int, ...]]:
        """(prefix, grid) for ``tokens`` tokens over ``input_grid``: the one prefix whose
        remaining tokens are patches that tile the input exactly; else the one reading whose
        patches tile it with a crop. A LayerError names the candidates when several readings
        fit, or both counts when none does."""
        if self.grid_size is not None and len(self.grid_size) != len(input_grid):
            raise LayerError(f"TokenGrid grid_size {self.grid_size} has {len(self.grid_size)} dimension(s), the "
                             f"input's grid {tuple(input_grid)} has {len(input_grid)}")
        prefixes = range(MAX_PREFIX_TOKENS + 1) if self.prefix == "auto" else [int(self.prefix)]
        for exact in (True, False):
            found = []
            for prefix in prefixes:
                rest = tokens - prefix
                if self.grid_size is not None:
                    if math.prod(self.grid_size) == rest:
                        found.append((prefix, tuple(self.grid_size)))
                    continue
                grid = patch_grid(rest, input_grid, exact)
                if grid is not None:
                    found.append((prefix, grid))
            if len(found) == 1:
                return found[0]
            if len(found) > 1:  # 17 tokens over 48 x 48: a class token and 4 x 4, or 8 prefix tokens and 3 x 3
                readings = ", ".join(f"prefix={p} with a {'x'.join(map(str, g))} grid" for p, g in found)
                raise LayerError(f"layer '{name}' gives {tokens} tokens, which over the {tuple(input_grid)} input can "
                                 f"be read as {readings}; pass TokenGrid(prefix=..., grid_size=...)")
        given = f"prefix={self.prefix!r}, grid={self.grid_size!r}"
        raise LayerError(
            f"layer '{name}' gives {tokens} tokens, which with {given} make no grid over the {tuple(input_grid)} "
            f"input (tokens = prefix + a grid with one patch size); pass both, e.g. TokenGrid(prefix=1, "
            f"grid_size=(14, 14)) for 197 tokens"
        )

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, name: str = "") -> torch.Tensor:
        """See ``Layout.grid``."""
        if tensor.dim() != lead + 2:
            raise LayerError(f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample, not (tokens, dim)")
        prefix, grid = self.resolve(tensor.shape[lead], input_grid, name)
        tokens = tensor.narrow(lead, prefix, math.prod(grid))
        return tokens.reshape(*tensor.shape[:lead], *grid, tensor.shape[-1]).movedim(-1, lead)


def aligned(grid: Sequence[int], input_grid: Sequence[int]) -> bool:
    """True when ``grid`` can be a map of the input: same rank, no dimension larger, and the
    input-to-grid ratios agree within the rounding of one position."""
    if not grid or len(grid) != len(input_grid) or any(g < 1 or g > n for g, n in zip(grid, input_grid)):
        return False
    if len(grid) == 1:
        return True
    low = max(n / (g + 1) for g, n in zip(grid, input_grid))
    high = min(n / max(g - 1, 0.5) for g, n in zip(grid, input_grid))
    return low <= high


def misfit(grid: Sequence[int], input_grid: Sequence[int]) -> float:
    """How far ``grid`` is from the input divided by one common stride (0: exactly)."""
    if len(grid) != len(input_grid) or not grid:
        return float("inf")
    return min(sum(abs(g - n / s) for g, n in zip(grid, input_grid)) for s in range(1, max(input_grid) + 1))


def patch_grid(tokens: int, input_grid: Sequence[int], exact: bool = False) -> tuple[int, ...] | None:
    """The grid of ``tokens`` patches of one size that tiles ``input_grid`` (``exact``: the patch
    divides every side; else floor division, as patch embeddings crop), or None."""
    if tokens < 1 or not input_grid:
        return None
    for patch in range(1, max(input_grid) + 1):
        grid = tuple(n // patch for n in input_grid)
        if exact and any(n % patch for n in input_grid):
            continue
        if math.prod(grid) == tokens and all(g > 0 for g in grid):
            return grid
        if math.prod(grid) < tokens:
            return None
    return None


def other_readings(shape: Sequence[int], input_grid: Sequence[int]) -> list[str]:
    """Besides channels first, how a per-sample output ``shape`` could line up with the input:
    channels last when its middle dimensions are a grid, tokens when it is (tokens, dim) over a
    1-D input with patches that tile it exactly."""
    readings = []
    if len(shape) == len(input_grid) + 1 and aligned(tuple(shape[1:]), input_grid) \
            and aligned(tuple(shape[:-1]), input_grid):
        readings.append("channels last (ChannelsLast())")
    if len(shape) == 2 and len(input_grid) == 1 and any(
            patch_grid(int(shape[0]) - prefix, input_grid) is not None for prefix in range(MAX_PREFIX_TOKENS + 1)):
        readings.append("tokens (TokenGrid())")
    return readings


# autograd nodes whose output is channels first, or channels last / tokens (name substrings)
_FIRST_NODES = ("Convolution", "Pool", "BatchNorm", "GroupNorm")
_LAST_NODES = ("LayerNorm", "Addmm", "Linear")
# elementwise nodes: their output keeps the layout of their inputs
_ELEMENTWISE_NODES = {"ReluBackward0", "ThresholdBackward0", "HardtanhBackward0", "GeluBackward0", "SiluBackward0",
                      "HardswishBackward0", "HardsigmoidBackward0", "LeakyReluBackward0", "EluBackward0", "CeluBackward0",
                      "PreluKernelBackward0", "RreluWithNoiseBackward0", "SoftplusBackward0", "SoftshrinkBackward0",
                      "HardshrinkBackward0", "LogSigmoidBackward0", "MishBackward0", "SigmoidBackward0", "TanhBackward0",
                      "SoftmaxBackward0", "LogSoftmaxBackward0", "MulBackward0", "AddBackward0", "SubBackward0",
                      "DivBackward0", "NativeDropoutBackward0", "CloneBackward0"}


def history_hint(tensor: torch.Tensor) -> str | None:
    """The layout a tensor's autograd history shows: 'first' when elementwise ops lead back only
    to convolutions, pooling or batch/group norms (a functional ReLU after a convolution), 'last'
    when only to layer norms or linear layers; None without history or when the two disagree."""
    found: set[str] = set()
    stack, seen = [tensor.grad_fn], 0
    while stack and seen < 64:
        node = stack.pop()
        if node is None:
            continue
        seen += 1
        name = type(node).__name__
        if any(part in name for part in _FIRST_NODES):
            found.add("first")
        elif any(part in name for part in _LAST_NODES):
            found.add("last")
        elif name in _ELEMENTWISE_NODES:
            stack.extend(parent for parent, _ in node.next_functions if parent is not None)
    return found.pop() if len(found) == 1 else None


def token_layout(model: Any) -> TokenGrid:
    """The token layout a vision transformer states: timm's ``num_prefix_tokens`` (class,
    distillation and register tokens), torchvision's class token, HuggingFace ViT's, BEiT's and
    DINOv2's class token (and DINOv2's registers), and DeiT's class and distillation tokens;
    ``TokenGrid()`` (derived from the counts) otherwise."""
    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(prefix, int) and not isinstance(prefix, bool):
        return TokenGrid(prefix=prefix)
    if any(c.__module__.startswith("torchvision.models.vision_transformer") for c in type(model).__mro__):  # subclasses too
        return TokenGrid(prefix=1)
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind in ("vit", "deit", "beit", "data2vec-vision", "dinov2"):  # DeiT's always carry a distillation token
        return TokenGrid(prefix=2 if kind == "deit" else 1)
    registers = getattr(config, "num_register_tokens", None)
    if kind == "dinov2_with_registers" and isinstance(registers, int):
        return TokenGrid(prefix=1 + registers)
    return TokenGrid()


def stated(layout: Layout, model: Any) -> Layout:
    """``layout``, with an automatic ``TokenGrid()`` replaced by the one the model states."""
    if isinstance(layout, TokenGrid) and layout.prefix == "auto" and layout.grid_size is None:
        return token_layout(model)
    return layout


LayoutLike = Union[Layout, None]
