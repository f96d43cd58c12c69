"""Receptive fields: pinned figures, and soundness/tightness on random architectures."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import interpkit
from interpkit import ReceptiveFieldError, receptive_field


def test_vgg16_conv5_3_is_196_pixels():
    field = receptive_field(torchvision.models.vgg16(), "features.28", (224, 224))
    assert field.size == (196, 196) and field.stride == (16, 16) and field.offset == (-90, -90)
    assert field.box(0, 0) == (-90, -90, 106, 106)
    assert field.clipped_box(0, 0) == (0, 0, 106, 106)
    assert field.clipped_box(13, 13) == (118, 118, 224, 224)


@pytest.mark.parametrize("builder, layer, size, stride", [
    (torchvision.models.resnet50, "layer4", 427, 32),
    (torchvision.models.resnet18, "layer4", 435, 32),
    (torchvision.models.alexnet, "features.12", 195, 32),
])
def test_published_figures(builder, layer, size, stride):
    field = receptive_field(builder(), layer)
    assert field.size == (size, size) and field.stride == (stride, stride)


class Keras(nn.Module):
    """The study's first layers, with Keras 'same' padding spelled out (3 before, 4 after)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 11, stride=4)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv2 = nn.Conv2d(8, 16, 5, padding=2)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(F.pad(x, (3, 4, 3, 4)))))
        return self.conv3(F.relu(self.pool2(F.relu(self.conv2(x)))))


@pytest.mark.parametrize("layer, grid, size, stride, offset", [
    ("conv1", 56, 11, 4, -3),   # 11 x 11, stride 4, 3 pixels of padding before
    ("pool1", 27, 19, 8, -3),   # + (3 - 1) * 4
    ("conv2", 27, 51, 8, -19),  # + (5 - 1) * 8, offset - 2 * 8
    ("pool2", 13, 67, 16, -19),
    ("conv3", 13, 99, 16, -35),
])
def test_hand_computed_figures_of_the_study_layers(layer, grid, size, stride, offset):
    field = receptive_field(Keras(), layer)
    assert field.grid_size == (grid, grid)
    assert field.size == (size, size) and field.stride == (stride, stride) and field.offset == (offset, offset)


def test_irregular_grid_from_adaptive_pooling():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d((4, 3)))
    field = receptive_field(model, "1", (13, 11))
    assert not field.regular and field.size is None
    # conv grid 11 x 9; pooled row 0 reads conv rows 0..2 (pixels 0..4), row 3 rows 8..10
    assert field.box(0, 0) == (0, 0, 5, 5)
    assert field.box(3, 2) == (8, 6, 13, 11)
    assert field.box(1, 1) == (2, 3, 8, 8)  # rows floor(11/4)=2..ceil(22/4)-1=5, columns 3..5


def test_errors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    with pytest.raises(ReceptiveFieldError, match="outside"):
        receptive_field(model, "0", (32, 32)).box(30, 0)
    with pytest.raises(ReceptiveFieldError, match="input_size"):
        receptive_field(model, "0", (32, -1))

    class Flipper(nn.Module):
        def forward(self, x):
            return torch.flip(x, dims=[3])

    with pytest.raises(ReceptiveFieldError, match="flip"):
        receptive_field(nn.Sequential(nn.Conv2d(3, 3, 1), Flipper()), "1", (8, 8))


# ---- random architectures -------------------------------------------------------------------

class Residual(nn.Module):
    def __init__(self, body: nn.Module, relu: bool) -> None:
        super().__init__()
        self.body, self.relu = body, relu

    def forward(self, x):
        out = x + self.body(x)
        return F.relu(out) if self.relu else out


class Concat(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Gate(nn.Module):
    """Squeeze-excitation: a global gate broadcast over the map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean(dim=(2, 3), keepdim=True)))


class Pad(nn.Module):
    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x, self.pad)


class AlongAxis(nn.Module):
    """An op that keeps the grid but reads along one axis: softmax, cumulative sum, L2 norm."""

    def __init__(self, op: str, dim: int) -> None:
        super().__init__()
        self.op, self.dim = op, dim

    def forward(self, x):
        if self.op == "softmax":
            return x.softmax(dim=self.dim)
        if self.op == "cumsum":
            return x.cumsum(dim=self.dim)
        return F.normalize(x, dim=self.dim)


@st.composite
def layers(draw, channels: int, relu: bool):
    kinds = ["conv", "maxpool", "avgpool", "pad", "residual", "concat", "same", "norm", "along"] + ["relu"] * relu
    kind = draw(st.sampled_from(kinds))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    if kind == "conv":
        return nn.Conv2d(channels, channels, k, stride=s, padding=p, dilation=d)
    if kind == "same":
        return nn.Conv2d(channels, channels, k, padding="same", dilation=d)
    if kind == "maxpool":
        return nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=draw(st.booleans()))
    if kind == "avgpool":
        return nn.AvgPool2d(k, stride=s, padding=p)
    if kind == "pad":
        return Pad(tuple(draw(st.integers(0, 2)) for _ in range(4)))
    if kind == "residual":
        return Residual(nn.Conv2d(channels, channels, k, padding="same"), relu)
    if kind == "norm":  # an instance norm's means are constant: hidden from tightness as the softmax's sums
        return draw(st.sampled_from([nn.GroupNorm(1, channels)] + [nn.InstanceNorm2d(channels, affine=True)] * relu))
    if kind == "along":  # a softmax's sums are constant: a gate's mean of them would hide every edge from tightness;
        # an L2 normalisation along an axis of length 1 is the sign function, constant almost everywhere (found by
        # hypothesis: two of them after a pool to one column left a box's edge unable to change the unit)
        ops = ["cumsum"] + ["normalize", "softmax"] * relu
        return AlongAxis(draw(st.sampled_from(ops)), draw(st.sampled_from([1, 2, 3, -1])))
    if kind == "concat":
        return nn.Sequential(Concat(nn.Conv2d(channels, channels, k, padding="same"), nn.Identity()),
                             nn.Conv2d(2 * channels, channels, 1))
    return nn.ReLU()


@st.composite
def networks(draw, relu: bool = True):
    """Random stacks of the layers receptive fields must handle.

    ReLUs are optional: a unit behind switched-off ReLUs may ignore an edge of its box for a
    given image, so tightness is checked on ReLU-free stacks, soundness on both.
    """
    torch.manual_seed(draw(st.integers(0, 2**16)))
    body = [nn.Conv2d(2, 3, 1)] + draw(st.lists(layers(3, relu), min_size=1, max_size=5))
    if draw(st.booleans()):
        body.append(Gate(3))
    return nn.Sequential(*body).double().eval()


def _unit(model, image, y, x):
    with torch.no_grad():
        return model(image)[0, :, y, x]


def _draw_unit(model, data):
    height, width = data.draw(st.integers(12, 24)), data.draw(st.integers(12, 24))
    image = torch.randn(1, 2, height, width, dtype=torch.float64)
    try:
        with torch.no_grad():
            out = model(image)
    except RuntimeError:  # the drawn layers shrink this image to nothing
        assume(False)
    field = receptive_field(model, str(len(model) - 1), (height, width))
    assert field.grid_size == tuple(out.shape[-2:])
    y, x = data.draw(st.integers(0, out.shape[-2] - 1)), data.draw(st.integers(0, out.shape[-1] - 1))
    return image, field, y, x


@settings(max_examples=40, deadline=None)
@given(model=networks(relu=True), data=st.data())
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_sound_on_random_architectures(model, data):
    """Changing every pixel outside a unit's box never changes the unit."""
    image, field, y, x = _draw_unit(model, data)
    top, left, bottom, right = field.clipped_box(y, x)
    outside = image.clone()
    mask = torch.ones(image.shape[-2:], dtype=torch.bool)
    mask[top:bottom, left:right] = False
    outside[..., mask] = torch.randn(int(mask.sum()), dtype=torch.float64) * 100
    torch.testing.assert_close(_unit(model, outside, y, x), _unit(model, image, y, x), rtol=0, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(model=networks(relu=False), data=st.data())
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_tight_on_random_architectures(model, data):
    """Changing the pixels of any edge of a unit's box (inside the image) changes the unit."""
    image, field, y, x = _draw_unit(model, data)
    top, left, bottom, right = field.clipped_box(y, x)
    reference = _unit(model, image, y, x)
    if bottom <= top or right <= left or torch.allclose(
            _unit(model, torch.randn_like(image) * 100, y, x), reference, rtol=0, atol=1e-12):
        return  # a unit made of padding reads no pixel, though its theoretical box may overlap the image
    edges = {"top": (slice(top, top + 1), slice(left, right)), "bottom": (slice(bottom - 1, bottom), slice(left, right)),
             "left": (slice(top, bottom), slice(left, left + 1)), "right": (slice(top, bottom), slice(right - 1, right))}
    for name, (rows, cols) in edges.items():  # every edge of the exact support, holes of dilated kernels included
        changed = False
        # huge values of either sign, then small random nudges: behind a max-pool a huge value can win
        # only in channels the next layer weighs negatively, where a small change still shows
        # (signed draws too: behind a 1 x 1 convolution a pixel wins a max-pool only along directions of
        # its channels that the convolution's weights favour, which same-sign values may all miss)
        for scale in (1e3, -1e3, 1e5, -1e5, 1e-2, 1e-1, 1.0, *[1e4] * 8):
            edited = image.clone()
            edge = edited[..., rows, cols]
            huge = torch.randn_like(edge).abs() * scale if abs(scale) != 1e4 else torch.randn_like(edge) * scale
            edited[..., rows, cols] = huge if abs(scale) > 1 else edge + torch.randn_like(edge) * scale
            if not torch.allclose(_unit(model, edited, y, x), reference, rtol=0, atol=1e-12):
                changed = True
                break
        assert changed, f"the {name} edge of box {(top, left, bottom, right)} does not affect unit {(y, x)}"


@settings(max_examples=10, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("builder, layer", [
    (torchvision.models.resnet18, "layer2"),
    pytest.param(torchvision.models.densenet121, "features.transition1", marks=pytest.mark.slow),
    pytest.param(torchvision.models.mobilenet_v2, "features.6", marks=pytest.mark.slow),
])
def test_sound_on_torchvision_families(builder, layer, data):
    torch.manual_seed(0)
    model = builder().double().eval()
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    field = receptive_field(model, layer, (64, 64))
    module = dict(model.named_modules())[layer]
    kept = []
    handle = module.register_forward_hook(lambda m, i, o: kept.append(o.clone()))
    y = data.draw(st.integers(0, field.grid_size[0] - 1))
    x = data.draw(st.integers(0, field.grid_size[1] - 1))
    top, left, bottom, right = field.clipped_box(y, x)
    edited = image.clone()
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[top:bottom, left:right] = False
    edited[..., mask] = 5.0
    with torch.no_grad():
        model(image), model(edited)
    handle.remove()
    torch.testing.assert_close(kept[1][0, :, y, x], kept[0][0, :, y, x], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name, layer, size, stride, offset", [
    ("caltech5_arch1", "features.4", 51, 8, -19),   # conv2 of every architecture
    ("caltech5_arch2", "features.7", 99, 16, -35),  # conv3
    ("caltech5_arch2", "features.9", 131, 32, -35),  # the last pooling, 6 x 6
    ("caltech5_arch3", "features.9", 131, 16, -51),  # conv4
])
def test_hand_computed_figures_of_the_zoo_cnns(name, layer, size, stride, offset):

    field = receptive_field(interpkit.get_model(name), layer, (224, 224))
    assert field.size == (size, size) and field.stride == (stride, stride) and field.offset == (offset, offset)


def test_tracing_leaves_the_model_as_it_was(small_cnn):
    from interpkit import layer_table
    from interpkit.testing import ModelFingerprint, assert_model_unchanged

    before = ModelFingerprint.of(small_cnn)
    receptive_field(small_cnn, "features.4", (32, 32))
    assert len(layer_table(small_cnn, (32, 32))) == 9  # the leaf modules, in call order
    assert_model_unchanged(before, small_cnn)

    class Flipper(nn.Module):
        def forward(self, x):
            return torch.flip(x, dims=[3])

    model = nn.Sequential(small_cnn.features, Flipper()).train()
    before = ModelFingerprint.of(model)
    with pytest.raises(ReceptiveFieldError):
        receptive_field(model, "1", (16, 16))
    assert_model_unchanged(before, model)
    assert torch._C._len_torch_function_stack() == 0


def _influence_hull(model, layer_output, y, x, size):
    """The bounding box of the input pixels whose gradient reaches unit (y, x): the truth for a
    linear model with generic weights."""
    image = torch.randn(1, 1, *size, requires_grad=True)
    (gradient,) = torch.autograd.grad(layer_output(model, image)[0, :, y, x].sum(), image)
    rows, cols = gradient[0].abs().sum(0).nonzero(as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


class Moves(nn.Module):
    """A tall convolution followed by an op that moves pixels."""

    def __init__(self, move):
        super().__init__()
        self.conv, self.move, self.after = nn.Conv2d(1, 2, (7, 1)), move, nn.Identity()

    def forward(self, x):
        return self.after(self.move(self.conv(x)))


@pytest.mark.parametrize("move, name", [(lambda t: t.mT, "mT"), (lambda t: torch.swapdims(t, 2, 3), "swapdims"),
                                        (lambda t: torch.einsum("nchw->ncwh", t), "einsum"),
                                        (lambda t: t.index_select(3, torch.arange(t.shape[3]).flip(0)), "index_select")])
def test_ops_that_move_pixels_are_refused_by_name(move, name):
    with pytest.raises(ReceptiveFieldError, match=f"'{name}'"):
        receptive_field(Moves(move), "after", (16, 16), in_channels=1)


def test_an_op_after_the_layer_does_not_matter():
    model = Moves(lambda t: t.flip(-1))
    assert receptive_field(model, "conv", (16, 16), in_channels=1).box(0, 0) == (0, 0, 7, 1)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zeros"])
def test_copying_padding_is_traced_exactly(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=2, padding_mode=mode), nn.Conv2d(2, 2, 5, stride=2),
                          nn.Conv2d(2, 2, 3, padding=1, padding_mode=mode))
    for depth in (1, 3):
        field = receptive_field(model, str(depth - 1), (12, 10), in_channels=1)
        for y in range(field.grid_size[0]):
            for x in range(field.grid_size[1]):
                truth = _influence_hull(model, lambda m, i: m[:depth](i), y, x, (12, 10))
                assert field.clipped_box(y, x) == truth, (mode, depth, y, x)


def test_circular_padding_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"))
    with pytest.raises(ReceptiveFieldError, match="circular"):
        receptive_field(model, "0", (8, 8), in_channels=1)


def test_a_layer_after_global_pooling_covers_the_whole_input():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for layer in ("2", "4"):
        field = receptive_field(model, layer, (32, 24))
        assert field.grid_size == (1, 1) and field.covers_input
        assert field.size == (32, 24) and field.stride is None and "whole input" in repr(field)
    assert not receptive_field(model, "0", (32, 24)).covers_input


def test_input_channels_come_from_the_first_convolution_that_runs():
    class RegisteredOutOfOrder(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(8, 4, 1)  # registered first, runs second
            self.stem = nn.Conv2d(1, 8, 3)

        def forward(self, x):
            return self.head(self.stem(x))

    assert receptive_field(RegisteredOutOfOrder(), "head", (10, 10)).box(0, 0) == (0, 0, 3, 3)


def symmetric_arch2() -> nn.Sequential:
    """The study's arch2 written with symmetric padding: the padding of conv2 and conv3 reads
    positions past what the previous layer produced, so their border units reach less of the image
    than their clipped theoretical boxes."""
    return nn.Sequential(nn.Conv2d(3, 8, 11, 4, padding=5), nn.ReLU(), nn.MaxPool2d(3, 2),
                         nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(16, 32, 3, padding=1))


def _structural_copy(model: nn.Module) -> nn.Module:
    """The same geometry with one channel, weights of one and no nonlinearity (max-pooling read
    as averaging over the same windows): a pixel reaches a unit exactly when a path joins them,
    and nothing can cancel. Its gradient support is the truth an exact receptive field must equal."""
    import copy

    structural = copy.deepcopy(model).double()
    for name, module in list(structural.named_modules()):
        if isinstance(module, nn.Conv2d):
            new: nn.Module = nn.Conv2d(1, 1, module.kernel_size, module.stride, module.padding, module.dilation,
                                       bias=False, padding_mode=module.padding_mode).double()
            nn.init.ones_(new.weight)
        elif isinstance(module, nn.MaxPool2d):
            assert module.dilation in (1, (1, 1))
            new = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
        elif isinstance(module, (nn.ReLU, nn.ReLU6, nn.BatchNorm2d, nn.Dropout)):
            new = nn.Identity()
        else:
            continue
        parent, _, child = name.rpartition(".")
        setattr(structural.get_submodule(parent) if parent else structural, child, new)
    return structural.eval()


class _Stop(Exception):
    pass


def _exact_supports(model: nn.Module, layer: str, size: tuple[int, int]) -> torch.Tensor:
    """(units, 4) hulls of the pixels reaching each unit of ``layer``, row-major, by autograd."""
    structural = _structural_copy(model)
    kept = []

    def stop(_module, _inputs, out):
        kept.append(out)
        raise _Stop

    image = torch.rand(1, 1, *size, dtype=torch.float64, requires_grad=True)
    handle = structural.get_submodule(layer).register_forward_hook(stop)
    try:
        structural(image)
    except _Stop:
        pass
    handle.remove()
    out = kept[0][0].sum(0)  # one channel anyway
    h, w = out.shape
    selectors = torch.eye(h * w, dtype=torch.float64).reshape(h * w, h, w)
    (gradients,) = torch.autograd.grad(out, image, selectors, is_grads_batched=True)
    reached = gradients[:, 0, 0] != 0
    rows, cols = reached.any(2), reached.any(1)
    first = lambda m: m.int().argmax(1)  # noqa: E731
    last = lambda m: m.shape[1] - m.flip(1).int().argmax(1)  # noqa: E731
    return torch.stack([first(rows), first(cols), last(rows), last(cols)], dim=1)


@pytest.mark.parametrize("builder, layers", [
    (symmetric_arch2, ["3", "6"]),
    (lambda: interpkit.get_model("caltech5_arch2").features, ["7", "9"]),
    (lambda: interpkit.get_model("caltech5_arch3").features, ["9"]),
    (torchvision.models.vgg16, ["features.16", "features.28"]),
    (torchvision.models.resnet18, ["layer1", "layer3.0", "layer4"]),
    (torchvision.models.mobilenet_v2, ["features.3", "features.13"]),
])
@pytest.mark.parametrize("size", [(224, 224), (97, 130)])
def test_clipped_boxes_are_exact_supports_at_every_unit(builder, layers, size):
    """Every unit's clipped box is the hull of the pixels that reach it: clipping tracked at every
    layer, not the theoretical box cut to the image at the end."""
    model = builder()
    for layer in layers:
        field = receptive_field(model, layer, size)
        truth = _exact_supports(model, layer, size)
        h, w = field.grid_size
        positions = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2)
        boxes = field.boxes(positions)
        wrong = (boxes != truth).any(1).nonzero().flatten()
        assert len(wrong) == 0, (layer, size, [(divmod(int(k), w), boxes[k].tolist(), truth[k].tolist())
                                              for k in wrong[:3]], f"{len(wrong)} of {h * w}")
        assert field.clipped_box(h - 1, w - 1) == tuple(truth[-1].tolist())


def test_symmetric_arch2_border_unit_from_the_issue():
    field = receptive_field(symmetric_arch2(), "6", (224, 224))
    assert field.box(6, 12) == (59, 155, 158, 254) and field.clipped_box(6, 12) == (59, 155, 158, 222)


@pytest.mark.parametrize("norm", [nn.GroupNorm(2, 4), nn.InstanceNorm2d(4), nn.LayerNorm([4, 10, 10]),
                                  nn.BatchNorm2d(4, track_running_stats=False)], ids=lambda m: type(m).__name__)
def test_normalisations_over_the_plane_widen_the_field_to_it(norm):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norm, nn.Conv2d(4, 4, 3))
    assert receptive_field(model, "2", (10, 10)).clipped_box(0, 0) == (0, 0, 10, 10)
    assert receptive_field(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3)),
                           "2", (10, 10)).clipped_box(0, 0) == (0, 0, 4, 4)  # running statistics: pointwise


class _ThenOp(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.conv, self.op, self.after = nn.Conv2d(3, 2, 3), op, nn.Identity()

    def forward(self, x):
        return self.after(self.op(self.conv(x)))


def test_ops_along_an_axis():
    """A cumulative op reads the positions before it, a softmax its whole axis, along channels
    neither moves anything; rot90 moves pixels and is refused."""
    def box(op):
        return receptive_field(_ThenOp(op), "after", (10, 10)).clipped_box(0, 2)

    assert box(lambda t: t) == (0, 2, 3, 5)
    assert box(lambda t: t.cummax(dim=3).values) == (0, 0, 3, 5)
    assert box(lambda t: t.softmax(dim=1)) == (0, 2, 3, 5)
    assert box(lambda t: t.log_softmax(dim=2)) == (0, 2, 10, 5)
    with pytest.raises(ReceptiveFieldError, match="rot90"):
        box(lambda t: t.rot90(1, [2, 3]))


def test_bad_arguments_raise_receptive_field_errors(small_cnn):
    for channels in (1.5, "a", -1, 0, True):
        with pytest.raises(ReceptiveFieldError, match="in_channels"):
            receptive_field(small_cnn, "features.1", (16, 16), in_channels=channels)
    field = receptive_field(small_cnn, "features.1", (16, 16))
    for y, x in ((1.5, 0), ("a", 0), (True, 0)):
        with pytest.raises(ReceptiveFieldError, match="int positions"):
            field.clipped_box(y, x)
    for positions in (torch.tensor([[99, 0]]), torch.tensor([[-1, 0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([1, 2, 3])):
        with pytest.raises(ReceptiveFieldError, match="positions"):
            field.boxes(positions)


def test_a_convolution_down_to_one_position_is_traced_not_pooled():
    """A 3 x 3 grid read by a dilated (2, 3) kernel with padding (0, 1) gives one position, whose
    columns read only the middle column (found by hypothesis: it was taken for a global pool)."""
    model = nn.Sequential(nn.Conv2d(2, 3, 1, stride=4), nn.Conv2d(3, 3, (2, 3), padding=(0, 1), dilation=2))
    field = receptive_field(model, "1", (12, 12), in_channels=2)
    assert field.grid_size == (1, 1) and field.clipped_box(0, 0) == (0, 4, 9, 5)
    assert field.box(0, 0) == (0, -4, 9, 13) and not field.covers_input


def test_mixing_a_whole_axis_that_keeps_its_length_widens_the_field():
    """A linear layer over the width and ``topk`` along it keep the grid, and were taken for
    pointwise: the field was 3 x 3 where the unit reads whole rows."""
    def box(op):
        return receptive_field(_ThenOp(op), "after", (10, 10)).clipped_box(0, 2)

    weight = torch.randn(8, 8)
    assert box(lambda t: F.linear(t, weight)) == (0, 0, 3, 10)
    assert box(lambda t: t.topk(8, dim=3).values) == (0, 0, 3, 10)
    assert box(lambda t: t.topk(2, dim=1).values) == (0, 2, 3, 5)  # along channels: pointwise in space
    assert box(lambda t: t.kthvalue(1, dim=2, keepdim=True).values.expand_as(t)) == (0, 2, 10, 5)
    with pytest.raises(ReceptiveFieldError, match="tensordot"):
        box(lambda t: torch.tensordot(t, weight, dims=([3], [0])))


class _PartialConv(nn.Module):
    """FasterNet's partial convolution: a 3 x 3 convolution written into two of eight channels."""

    def __init__(self, through_view: bool):
        super().__init__()
        self.stem, self.partial, self.out = nn.Conv2d(3, 8, 1), nn.Conv2d(2, 2, 3, padding=1), nn.Identity()
        self.through_view = through_view

    def forward(self, x):
        x = self.stem(x).clone()
        if self.through_view:
            part = x[:, :2]
            part.add_(self.partial(part))
        else:
            x[:, :2, :, :] = self.partial(x[:, :2, :, :])
        return self.out(x)


class _WrittenOtherwise(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how, self.a, self.b, self.out = how, nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(2, 2, 5, padding=2), nn.Identity()

    def forward(self, x):
        h = self.a(x)
        if self.how == "out":
            torch.add(h[:, :2], self.b(h[:, :2]), out=h[:, :2])
        elif self.how == "ellipsis":
            h[:, :2, ...] = self.b(h[:, :2, ...])
        else:
            h = torch.special.softmax(h, 3)
        return self.out(h)


@pytest.mark.parametrize("how, size", [("out", (7, 7)), ("ellipsis", (7, 7)), ("special", (3, 18))])
def test_writes_through_out_and_an_ellipsis_and_torch_special_softmax(how, size):
    """The review of the day's fixes: an ``out=`` write through a view kept the base's field, a
    channel write ending in ``...`` was refused, ``torch.special.softmax`` was taken for pointwise."""
    assert receptive_field(_WrittenOtherwise(how), "out", (16, 16), in_channels=3).size == size


@pytest.mark.parametrize("through_view", [False, True])
def test_a_write_into_some_channels_widens_the_field(through_view):
    """``x[:, :2] = conv(...)`` returns None, and the written tensor kept its 1 x 1 field."""
    torch.manual_seed(0)
    model = _PartialConv(through_view).eval()
    field = receptive_field(model, "out", (16, 16))
    assert (field.size, field.stride) == ((3, 3), (1, 1)) and field.clipped_box(5, 5) == (4, 4, 7, 7)
    x = torch.randn(1, 3, 16, 16)
    moved = x.clone()
    moved[..., 6, 6] += 10  # inside the box: the partial convolution's channels see it
    with torch.no_grad():
        assert (model(x)[0, :2, 5, 5] - model(moved)[0, :2, 5, 5]).abs().max() > 1e-3


def test_a_write_into_some_positions_is_refused():
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.out = nn.Conv2d(3, 4, 3, padding=1), nn.Identity()

        def forward(self, x):
            y = self.conv(x).clone()
            y[:, :, :, :4] = torch.zeros(1, 4, 16, 4) + y.sum()
            return self.out(y)

    with pytest.raises(ReceptiveFieldError, match="assignment into some positions"):
        receptive_field(Shifted(), "out", (16, 16))


def test_a_head_that_does_not_fit_the_size_after_the_layer_ran_is_no_reason_to_refuse():
    """The study's arch1 at 64 px: its classifier expects 224 px, the convolutions do not care."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 2)).eval()
    assert receptive_field(model, "1", (16, 16)).clipped_box(5, 5) == (4, 4, 7, 7)
    with pytest.raises(ReceptiveFieldError, match="did not run"):
        receptive_field(model, "3", (16, 16))


def test_layer_table_bad_input_is_named():
    from interpkit import layer_table

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert [row.output_shape for row in layer_table(model, (16, 16), in_channels=1)] == [(4, 14, 14), (4, 14, 14)]
    for options, words in (({"input_size": (16, 16)}, "did not run"), ({"input_size": (2, 2), "in_channels": 1},
                                                                       "did not run"),
                           ({"input_size": (16, 16), "in_channels": "1"}, "in_channels"),
                           ({"input_size": "16"}, "input_size"), ({"input_size": 16}, "input_size")):
        with pytest.raises(interpkit.InputError, match=words):
            layer_table(model, **options)
