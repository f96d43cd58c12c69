"""Hypothesis strategies for property tests of explainers."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from .models import BatchNormDropout, ConvStack, FunctionalReLU, ResidualReusedReLU


@st.composite
def image_batches(draw: Any, min_batch: int = 1, max_batch: int = 4, channels: int = 3, min_side: int = 8,
                  max_side: int = 40, square: bool | None = None) -> torch.Tensor:
    """Float image batches (N, C, H, W) from a drawn seed: square with ``square=True``, never
    square with ``square=False`` (which needs ``min_side < max_side``), either by default."""
    n = draw(st.integers(min_batch, max_batch))
    height = draw(st.integers(min_side, max_side))
    if square or (square is None and draw(st.booleans())):
        width = height
    else:
        width = draw(st.integers(min_side, max_side).filter(lambda side: side != height or square is None))
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.randn(n, channels, height, width, generator=torch.Generator().manual_seed(seed))


@st.composite
def small_models(draw: Any, classes: int = 4) -> torch.nn.Module:
    """One of the hard-case models with tensor outputs, seeded, in a drawn training mode."""
    cls = draw(st.sampled_from([ConvStack, ResidualReusedReLU, FunctionalReLU, BatchNormDropout]))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    return cls(classes).train(draw(st.booleans()))


def layer_choices(model: torch.nn.Module) -> st.SearchStrategy:
    """Names of the model's Conv2d layers, or None (the explainer's own choice)."""
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return st.one_of(st.none(), st.sampled_from(names))


def targets(batch: int, classes: int) -> st.SearchStrategy:
    """Every class-target form: None, int, per-sample list, 'all', LongTensor (N,) or (N, K), callable."""
    index = st.integers(0, classes - 1)
    return st.one_of(
        st.none(),
        index,
        st.lists(index, min_size=batch, max_size=batch),
        st.just("all"),
        st.lists(index, min_size=batch, max_size=batch).map(torch.tensor),
        st.integers(1, classes).flatmap(lambda k: st.lists(st.lists(index, min_size=k, max_size=k),
                                                           min_size=batch, max_size=batch)).map(torch.tensor),
        st.tuples(index, index).map(lambda pair: (lambda out: out[:, pair[0]] - out[:, pair[1]])),
    )
