import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from models import SmallCNN  # noqa: E402


@pytest.fixture
def small_cnn():
    torch.manual_seed(0)
    model = SmallCNN()
    model.train()  # explainers must switch to eval and give training mode back
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval and train differ
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
