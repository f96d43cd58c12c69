"""Maximally activating patches per image, and top patches streamed over a dataset."""

import pytest
import torch
from distributed import run_ranks
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import interpkit
from interpkit import InputError, MaxActivatingPatches, Neuron, receptive_field, top_patches
from interpkit.testing import ModelFingerprint, assert_model_unchanged


class GapNet(nn.Module):
    """Convolutions, then global average pooling and a linear layer: scores are exactly linear
    in the last feature map, so contributions must add up to score minus bias."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def gapnet():
    torch.manual_seed(0)
    return GapNet().double().eval()


def test_contributions_add_up_to_the_score(gapnet):
    images = torch.randn(3, 3, 40, 36, dtype=torch.float64)
    explanation = MaxActivatingPatches(gapnet, layer="features.3")(images, target="all")
    assert explanation.maps.shape == (3, 4, 10, 9)
    totals = explanation.maps.double().sum(dim=(2, 3))
    torch.testing.assert_close(totals, explanation.scores - gapnet.fc.bias, rtol=1e-5, atol=1e-5)


def test_boxes_are_the_receptive_fields_of_the_best_positions(gapnet):
    images = torch.randn(2, 3, 40, 36, dtype=torch.float64)
    explanation = MaxActivatingPatches(gapnet, layer="features.3", k=3)(images, target=[1, 2])
    field = receptive_field(gapnet, "features.3", (40, 36))
    flat = explanation.maps.flatten(2)
    for n in range(2):
        for rank in range(3):
            y, x = explanation.positions[n, 0, rank].tolist()
            assert explanation.box(n, 0, rank) == field.clipped_box(y, x)
            assert flat[n, 0, y * 9 + x] == flat[n, 0].sort(descending=True).values[rank]
    crops = explanation.crops(images)
    top, left, bottom, right = explanation.box(1, 0)
    assert torch.equal(crops[1][0], images[1, :, top:bottom, left:right])
    figure = explanation.figure(torch.rand(2, 3, 40, 36), sample=1)
    assert isinstance(figure, Figure)


def test_neuron_target_finds_the_channel_maximum(gapnet):
    images = torch.randn(2, 3, 40, 36, dtype=torch.float64)
    explanation = MaxActivatingPatches(gapnet, layer="features.3")(images, target=Neuron("features.3", 5))
    activation = gapnet.features(images)[:, 5].flatten(1)
    best = explanation.positions[:, 0, 0]
    assert torch.equal(best[:, 0] * 9 + best[:, 1], activation.argmax(1))


def test_model_restored_and_bad_input(small_cnn, images):
    before = ModelFingerprint.of(small_cnn)
    MaxActivatingPatches(small_cnn)(images, target=1)
    with pytest.raises(interpkit.TargetError):
        MaxActivatingPatches(small_cnn)(images, target=9)
    assert_model_unchanged(before, small_cnn)
    with pytest.raises(InputError, match="k must be"):
        MaxActivatingPatches(small_cnn, k=0)


# ---- over a dataset --------------------------------------------------------------------------

def _brute_force(model, layer, images, k):
    with torch.no_grad():
        out = []
        hook = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.append(o.clone()))
        model(images)
        hook.remove()
    act = out[0]
    n, c, h, w = act.shape
    values, flat = act.flatten(2).max(dim=2)  # (N, C)
    expected = []
    for channel in range(c):
        ranked = sorted(range(n), key=lambda i: (-values[i, channel].item(), i))[:k]
        expected.append([(values[i, channel].item(), i, divmod(flat[i, channel].item(), w)) for i in ranked])
    return expected


@settings(max_examples=15, deadline=None)
@given(count=st.integers(1, 30), k=st.integers(1, 6), batch=st.integers(1, 9), duplicates=st.integers(0, 5),
       seed=st.integers(0, 1000))
def test_streaming_equals_brute_force_with_ties(count, k, batch, duplicates, seed):
    torch.manual_seed(seed)
    model = GapNet().double().eval()
    images = torch.randn(count, 3, 24, 20, dtype=torch.float64)
    if count > 1:  # repeated images tie exactly: the smaller index must win
        images[torch.randint(0, count, (duplicates,))] = images[0].clone()
    result = top_patches(model, "features.3", TensorDataset(images, torch.zeros(count)), k=k,
                         batch_size=batch, progress=False)
    expected = _brute_force(model, "features.3", images, k)
    assert result.values.shape == (8, k)
    for channel, entries in enumerate(expected):
        got = [(result.values[channel, j].item(), result.indices[channel, j].item(),
                tuple(result.positions[channel, j].tolist())) for j in range(len(entries))]
        assert got == [(v, i, tuple(p)) for v, i, p in entries]
        assert (result.indices[channel, len(entries):] == -1).all()


def test_crops_figure_channels_and_loader(gapnet):
    images = torch.randn(12, 3, 24, 20, dtype=torch.float64)
    data = TensorDataset(images, torch.zeros(12))
    result = top_patches(gapnet, gapnet.features[3], DataLoader(data, batch_size=5), k=3, channels=[2, 6],
                         progress=False)
    assert result.channels == [2, 6] and result.values.shape == (2, 3)
    crops = result.crops()
    index = result.indices[1, 0].item()
    top, left, bottom, right = result.boxes[1, 0].tolist()
    assert torch.equal(crops[1][0], images[index, :, top:bottom, left:right])
    assert isinstance(result.figure(), Figure)


def test_dataset_errors_leave_the_model_unchanged(small_cnn, images):
    before = ModelFingerprint.of(small_cnn)
    data = TensorDataset(images, torch.zeros(4))
    with pytest.raises(InputError, match="in order"):
        top_patches(small_cnn, "features.4", DataLoader(data, shuffle=True), progress=False)
    with pytest.raises(InputError, match="channels"):
        top_patches(small_cnn, "features.4", data, channels=[99], progress=False)
    with pytest.raises(InputError, match="k must"):
        top_patches(small_cnn, "features.4", data, k=0, progress=False)
    with pytest.raises(interpkit.LayerError):
        top_patches(small_cnn, "fc", data, progress=False)
    with pytest.raises(InputError, match="empty"):
        top_patches(small_cnn, "features.4", TensorDataset(images[:0]), progress=False)
    assert_model_unchanged(before, small_cnn)


def _top_patches_on_this_rank(images):
    torch.manual_seed(0)
    result = top_patches(GapNet().double().eval(), "features.3", TensorDataset(images, torch.zeros(len(images))), k=4,
                         batch_size=3, progress=False)
    return result.values.numpy(), result.indices.numpy(), result.positions.numpy()


@pytest.mark.slow
def test_two_processes_equal_one():
    images = torch.randn(23, 3, 24, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    images[17] = images[2].clone()  # a tie across the two shards
    torch.manual_seed(0)
    single = top_patches(GapNet().double().eval(), "features.3", TensorDataset(images, torch.zeros(23)), k=4,
                         batch_size=3, progress=False)
    for values, indices, positions in run_ranks(_top_patches_on_this_rank, (images,)):
        assert torch.equal(torch.from_numpy(values), single.values)
        assert torch.equal(torch.from_numpy(indices), single.indices)
        assert torch.equal(torch.from_numpy(positions), single.positions)


def test_indices_are_positions_in_the_loaders_dataset(gapnet):
    from torch.utils.data import Subset

    images = torch.randn(10, 3, 24, 20, dtype=torch.float64)
    subset = Subset(TensorDataset(images, torch.zeros(10)), [7, 8, 9])
    result = top_patches(gapnet, "features.3", DataLoader(subset, batch_size=2), k=3, progress=False)
    assert sorted(result.indices[0].tolist()) == [0, 1, 2]
    assert result.crops()[0][0].shape[0] == 3


def test_top_patches_of_a_model_whose_batches_mix_samples_do_not_depend_on_the_batch_size():
    """A batch norm without running statistics normalised each batch by its own statistics: the
    top samples changed with ``batch_size``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU()).eval()
    data = TensorDataset(torch.randn(8, 3, 16, 16) * torch.linspace(0.2, 3, 8)[:, None, None, None])
    results = [top_patches(model, "2", data, k=3, batch_size=size, progress=False) for size in (1, 3, 8)]
    for result in results[1:]:
        assert torch.equal(result.indices, results[0].indices)
        torch.testing.assert_close(result.values, results[0].values)


def test_images_of_different_sizes_are_refused_not_boxed_with_the_first_ones_field():
    """The boxes came from the first image's receptive field, so a later, larger image's best
    patch was cropped at the wrong place (or the run ended with a layer-grid error)."""
    model = nn.Sequential(nn.Conv2d(3, 1, 5, padding=2)).eval()
    images = [torch.zeros(3, 16, 16), torch.zeros(3, 32, 32)]
    for size in (1, 2):
        with pytest.raises(InputError, match="different sizes"):
            top_patches(model, "0", images, k=1, batch_size=size, progress=False)


def test_top_patches_argument_errors(gapnet):
    data = TensorDataset(torch.randn(5, 3, 24, 20, dtype=torch.float64))
    for channels in ([1.5], 2, ["a"], [True]):
        with pytest.raises(InputError, match="channels must be"):
            top_patches(gapnet, "features.3", data, channels=channels, progress=False)
    with pytest.raises(InputError, match="batch_size"):
        top_patches(gapnet, "features.3", data, batch_size=0, progress=False)
    with pytest.raises(InputError, match="drop_last"):
        top_patches(gapnet, "features.3", DataLoader(data, batch_size=2, drop_last=True), progress=False)
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    for sampler in (BatchSampler(SequentialSampler(data), 2, drop_last=True), BatchSampler(RandomSampler(data), 2, False)):
        with pytest.raises(InputError, match="drop_last|in order"):  # the loader's own flags said neither
            top_patches(gapnet, "features.3", DataLoader(data, batch_sampler=sampler), progress=False)
    in_order = DataLoader(data, batch_sampler=BatchSampler(SequentialSampler(data), 2, drop_last=False))
    assert top_patches(gapnet, "features.3", in_order, k=5, progress=False).indices.min() == 0
    import numpy as np

    arrays = [top_patches(gapnet, "features.3", data, k=1, channels=c, progress=False).channels
              for c in (np.arange(2), torch.tensor([0, 1]), [0, 1])]
    assert arrays == [[0, 1]] * 3
    result = top_patches(gapnet, "features.3", data, k=1, channels=[1, 2], progress=False)
    with pytest.raises(InputError, match=r"channels \[0\]"):
        result.figure(channels=[0])
    with pytest.raises(InputError, match="crop_pixels"):
        result.figure(crop_pixels=0)
    with pytest.raises(InputError, match="image tensors"):
        top_patches(gapnet, "features.3", DataLoader(["a", "b"], collate_fn=lambda _: data[:2][0]),
                    progress=False).crops()


def test_receptive_fields_are_traced_again_after_a_module_is_replaced():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    explainer = MaxActivatingPatches(model, layer="3", k=1)
    x = torch.randn(1, 3, 16, 16)
    assert explainer(x, target=0).receptive_field.size == (5, 5)
    model[2] = nn.Conv2d(4, 4, 7, padding=3)
    assert explainer(x, target=0).receptive_field.size == (9, 9)
    model[2].dilation, model[2].padding = (2, 2), (6, 6)  # changed in place: the same module, a wider field
    assert MaxActivatingPatches(model, layer="3", k=1)(x, target=0).receptive_field.size == (15, 15)
