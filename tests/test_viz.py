"""Figures show what they claim: zero is mid-grey, a row shares one scale, the prediction is framed."""

import numpy as np
import pytest
import torch

from interpkit import InputError
from interpkit.core import MapKind
from interpkit.viz import NeuronPanel, colorize, gradient_images, plot_image_grid, plot_neuron_gradients


def test_symmetric_gradient_images_put_zero_at_mid_grey():
    maps = torch.zeros(1, 2, 3, 4, 4)
    maps[0, 0, :, 0, 0] = 2.0  # the largest |value| of map 0
    maps[0, 0, :, 1, 1] = -1.0
    maps[0, 1, :, 2, 2] = -0.001  # a tiny map still spans the range
    pictures = gradient_images(maps, symmetric=True)
    assert pictures[0, 0, 3, 3].tolist() == [128] * 3 and pictures[0, 0, 0, 0].tolist() == [255] * 3
    assert pictures[0, 0, 1, 1, 0] == 64 and pictures[0, 1, 2, 2, 0] == 0 and pictures[0, 1, 0, 0, 0] == 128
    spread = torch.linspace(-1, 1, 1000).view(1, 1, 1, 10, 100).clone()
    spread[..., 0, 0] = 1000.0  # one extreme pixel
    plain, clipped = gradient_images(spread, symmetric=True)[0, 0], gradient_images(spread, symmetric=True,
                                                                                     outliers=0.01)[0, 0]
    assert np.ptp(plain[1:]) <= 1 and np.ptp(clipped[1:]) > 200  # the extreme no longer greys out the rest
    assert clipped[4, 99, 0] in (127, 128)  # (about) zero stays mid-grey


def test_sample_scale_keeps_a_rows_maps_comparable():
    maps = torch.zeros(2, 3, 4, 4)
    maps[:, 0, 0, 0], maps[:, 1, 0, 0] = 10.0, 1.0  # map 1 is a tenth of map 0's evidence
    own = colorize(maps, MapKind.INPUT_GRID, "bone", scale="map")
    shared = colorize(maps, MapKind.INPUT_GRID, "bone", scale="sample")
    assert np.array_equal(own[:, 0], own[:, 1])  # each stretched to its own peak: they look alike
    assert shared[0, 1, 0, 0].sum() < shared[0, 0, 0, 0].sum() / 3  # on one scale the weaker map is darker
    with pytest.raises(InputError, match="scale"):
        colorize(maps, scale="row")


def test_grid_frames_the_highlighted_panels_and_fits_its_labels():
    picture = np.zeros((8, 8, 3), dtype=np.uint8)
    figure = plot_image_grid([[picture, picture]], ["a long row label\nsecond line"], ["x", "y"],
                             highlight=[(0, 1)])
    axes = figure.axes
    assert [any(s.get_visible() for s in a.spines.values()) for a in axes] == [False, True]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    label = axes[0].yaxis.label.get_window_extent(canvas.get_renderer())
    assert label.x0 >= 0  # the row label is not clipped at the figure's left edge


def test_neuron_gradients_show_the_crop_and_the_whole_gradient():
    gradient = torch.randn(3, 32, 32)
    panels = [NeuronPanel(5, 2.5, (4, 6, 14, 20), gradient), NeuronPanel(9, 1.25, (0, 0, 32, 32), -gradient)]
    figure = plot_neuron_gradients(np.zeros((32, 32, 3), dtype=np.uint8), panels, "title")
    images = [a.images[0].get_array() for a in figure.axes if a.images]
    assert images[1].shape[:2] == (10, 14) and images[2].shape[:2] == (32, 32)  # crop, then the whole
    assert [a.get_title() for a in figure.axes[1:3]] == ["channel 5\nact 2.50", "channel 9\nact 1.25"]


def test_a_field_past_the_border_is_cropped_to_its_full_size_with_the_outside_striped():
    from interpkit.viz.figures import OUTSIDE_STRIPES

    gradient = torch.randn(3, 32, 32)
    panels = [NeuronPanel(1, 1.0, (-6, 20, 10, 36), gradient), NeuronPanel(2, 1.0, (8, 8, 24, 24), gradient)]
    figure = plot_neuron_gradients(np.zeros((32, 32, 3), dtype=np.uint8), panels)
    crops = [a.images[0].get_array() for a in figure.axes if a.images][1:3]
    assert crops[0].shape[:2] == crops[1].shape[:2] == (16, 16)  # one size, whatever the border
    outside = np.concatenate([crops[0][:6].reshape(-1, 3), crops[0][:, 12:].reshape(-1, 3)])
    assert {tuple(p) for p in outside} <= set(OUTSIDE_STRIPES)
    assert not {tuple(p) for p in crops[0][6:, :12].reshape(-1, 3)} <= set(OUTSIDE_STRIPES)


def test_one_nan_or_infinity_leaves_the_rest_of_the_map_drawn():
    """One NaN or inf made the whole map one colour: the span was NaN, every level 0."""
    clean = torch.linspace(0, 1, 16).view(1, 1, 4, 4)
    for bad, end in ((float("nan"), (0, 0)), (float("inf"), (3, 2)), (-float("inf"), (0, 0))):
        spoiled = clean.clone()
        spoiled[0, 0, 3, 3] = bad
        colours = colorize(spoiled)[0, 0]
        assert len(np.unique(colours.reshape(-1, 3), axis=0)) == 15
        assert (colours[3, 3] == colours[end]).all()  # drawn at an end of the finite values' range
    from interpkit.viz.images import _levels

    flat_and_hot = torch.tensor([1.0, 1.0, float("inf"), 1.0]).view(1, 1, 1, 4)
    assert _levels(flat_and_hot, 2).ravel().tolist() == [0, 0, 255, 0]  # +inf is the hottest, whatever the rest


def test_an_image_one_or_three_pixels_wide_keeps_its_layout_and_floats_outside_0_1_are_refused():
    """A (1, 3, 6, 3) float image was read as (N, H, W, C): the overlay came out transposed. A float
    image in 0..255 or a normalised model input was clipped to a saturated picture."""
    from interpkit.viz import overlay_maps, to_uint8_images

    red = torch.zeros(1, 3, 6, 3)
    red[0, 0] = 1.0
    assert to_uint8_images(red).shape == (1, 6, 3, 3) and (to_uint8_images(red)[0, 0, 0] == [255, 0, 0]).all()
    assert overlay_maps(torch.zeros(1, 1, 6, 3), red, alpha=0.0).shape == (1, 1, 6, 3, 3)
    as_uint8 = (red * 255).to(torch.uint8)
    assert (to_uint8_images(as_uint8) == to_uint8_images(red)).all()  # a torch tensor: channels first
    assert to_uint8_images(as_uint8.permute(0, 2, 3, 1).numpy()).shape == (1, 6, 3, 3)  # NumPy: channels last
    for bad in (red * 255, (red - 0.45) / 0.225, red * float("nan")):
        with pytest.raises(InputError, match=r"\[0, 1\]"):
            to_uint8_images(bad)
    overshoot = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=16, mode="bicubic")  # about +-0.15
    assert to_uint8_images(overshoot).shape == (1, 16, 16, 3)
    assert (to_uint8_images(red.bfloat16()) == to_uint8_images(red)).all()
