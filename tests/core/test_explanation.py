import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from interpkit import Explanation, GradCAM, InputError, MapKind, Neuron


def _explanation(maps):
    n, k = maps.shape[:2]
    return Explanation(maps, torch.arange(k).expand(n, -1), torch.zeros(n, k), "test", MapKind.INPUT_GRID)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (2, 3, 5, 4), elements=st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)))
def test_normalized_is_in_unit_interval_and_never_nan(values):
    normalized = _explanation(torch.from_numpy(values)).normalized()
    assert torch.isfinite(normalized).all()
    assert normalized.min() >= 0 and normalized.max() <= 1
    flat = normalized.flatten(2)
    for row, source in zip(flat.flatten(0, 1), torch.from_numpy(values).flatten(2).flatten(0, 1)):
        if source.max() > source.min():
            assert row.max() == 1 and row.min() == 0
        else:
            assert row.eq(0).all()


def test_overlay_shapes_and_inputs(small_cnn, images):
    explanation = GradCAM(small_cnn, upsample=False)(images, target=[0, 1, 2, 3])
    floats = torch.rand(4, 3, 32, 32)
    out = explanation.overlay(floats, alpha=0.4)
    assert out.shape == (4, 1, 32, 32, 3) and out.dtype == np.uint8
    as_uint8 = explanation.overlay((floats.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), 0.4)
    assert np.abs(out.astype(int) - as_uint8.astype(int)).max() <= 1
    assert np.array_equal(explanation.overlay(floats, alpha=0.0)[:, 0],
                          (floats.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    with pytest.raises(InputError, match="colormap"):
        explanation.overlay(floats, colormap="rainbowz")
    for bad in (2, "0.5", None, float("nan"), True):
        with pytest.raises(InputError, match="alpha must be a number"):
            explanation.overlay(floats, alpha=bad)
    with pytest.raises(InputError, match="3 images for 4"):
        explanation.overlay(floats[:3])


def test_jet_colormap_is_the_default(small_cnn, images):
    explanation = _explanation(torch.linspace(0, 1, 16).reshape(1, 1, 4, 4))
    hot = explanation.overlay(np.zeros((1, 4, 4, 3), np.uint8), alpha=1.0)[0, 0]
    assert tuple(hot[3, 3]) == (128, 0, 0)  # JET's top is dark red in RGB
    assert tuple(hot[0, 0]) == (0, 0, 128)  # and its bottom dark blue


def test_save_writes_one_png_per_map_and_nothing_else(tmp_path, small_cnn, images):
    import cv2

    explanation = GradCAM(small_cnn)(images, target="all")
    paths = explanation.save(tmp_path / "out")
    assert len(paths) == 20 and all(p.exists() for p in paths)
    assert cv2.imread(str(paths[0])).shape == (32, 32, 3)
    # every file in the folder, hidden temporary files included, is one of the maps
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_save_into_a_file_is_refused(tmp_path, small_cnn, images):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    with pytest.raises(InputError, match="is a file"):
        GradCAM(small_cnn)(images).save(blocker)
    assert blocker.read_text() == "a file"


def test_save_names_are_unique_per_map(tmp_path, small_cnn, images):
    same_channel = [Neuron("features.2", 5), Neuron("features.5", 5)]
    paths = GradCAM(small_cnn)(images[:1], target=same_channel).save(tmp_path)
    assert len(set(paths)) == 2 and len(list(tmp_path.iterdir())) == 2


def test_cpu_and_numpy(small_cnn, images):
    explanation = GradCAM(small_cnn)(images)
    arrays_ = explanation.numpy()
    assert arrays_["maps"].shape == (4, 1, 32, 32) and arrays_["layer"] == "features.5"
    assert explanation.cpu().maps.device.type == "cpu"


def test_saving_where_nothing_can_be_written_is_bad_input(small_cnn, images, tmp_path):
    explanation = GradCAM(small_cnn)(images[:1])
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write the maps"):
        explanation.save(blocker / "maps")
