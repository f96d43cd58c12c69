"""pytest fixtures for explainer tests, registered through the ``pytest11`` entry point."""

from __future__ import annotations

import pytest
import torch

from .models import hard_case_models


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "interpkit_explainer" in metafunc.fixturenames:
        from ..registry import list_explainers  # on use: pytest loads this plugin in every run

        metafunc.parametrize("interpkit_explainer", list_explainers(), indirect=True)


@pytest.fixture
def interpkit_explainer(request: pytest.FixtureRequest) -> type:
    """Each registered explainer class in turn (built-in and plugins): a new one cannot skip a test."""
    from ..registry import get_explainer

    return get_explainer(request.param)


@pytest.fixture
def interpkit_models() -> dict[str, torch.nn.Module]:
    """Fresh hard-case models (``hard_case_models``): plain conv stack, reused in-place ReLU,
    functional ReLU, BatchNorm + Dropout, dict output, 1-D and 3-D convolutions, a token model
    and a two-input model; all in training mode."""
    return hard_case_models()


@pytest.fixture
def interpkit_images() -> torch.Tensor:
    """A seeded random image batch (3, 3, 20, 16)."""
    return torch.randn(3, 3, 20, 16, generator=torch.Generator().manual_seed(0))
