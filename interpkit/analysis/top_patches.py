"""The k input patches that activate each channel of a layer most, over a whole dataset.

One streaming pass under ``no_grad``: a forward hook reduces each batch's layer output to the
per-channel spatial maximum and its position, and stops the forward there (the layers after it
are never run). A running top-k per channel is merged with each batch, so memory is
channels x k whatever the dataset size. Under an initialised ``torch.distributed`` process group
each rank streams its shard and the lists are merged across ranks; the result equals the
single-process one.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..core import (
    ModuleLike,
    check_int,
    display,
    evaluation,
    forward_hooks,
    mixes_samples,
    model_device,
    resolve_layer,
)
from ..errors import InputError, LayerError
from .receptive_field import ReceptiveField, receptive_field


@dataclass
class TopPatches:
    """Per channel, the k best (value, sample index, position) found, best first.

    ``values`` (C, k) in the layer's dtype, ``indices`` (C, k) long (-1 where fewer than k samples were seen),
    ``positions`` (C, k, 2) as (y, x) on the layer grid, ``boxes`` (C, k, 4) clipped input boxes.
    Ties go to the smaller sample index, then the first position in row-major order.
    """

    layer: str
    channels: list[int]
    values: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    receptive_field: ReceptiveField
    dataset: Any

    def crops(self) -> list[list[torch.Tensor]]:
        """``crops[c][j]``: the patch (C, h, w) of the j-th best sample of the c-th channel."""
        needed = sorted({int(i) for i in self.indices.flatten().tolist() if i >= 0})
        images = {i: _image(self.dataset[i]) for i in needed}
        out = []
        for row, boxes in zip(self.indices.tolist(), self.boxes.tolist()):
            out.append([images[i][:, t:b, l:r] for i, (t, l, b, r) in zip(row, boxes) if i >= 0])
        return out

    def figure(self, crop_pixels: int = 48, channels: Sequence[int] | None = None, visualisation: Any = None):
        """A Zeiler-Fergus grid: a row of k crops per channel, each scaled to ``crop_pixels``;
        with ``visualisation`` (a ``Visualisation`` of every channel here, in this order) each row
        opens with the image optimised to excite its channel."""
        check_int("crop_pixels", crop_pixels)
        unknown = [] if channels is None else [c for c in channels if c not in self.channels]
        if unknown:
            raise InputError(f"channels {unknown} are not among these top patches' ({self.channels})")
        chosen = range(len(self.channels)) if channels is None else [self.channels.index(c) for c in channels]
        leading = None
        if visualisation is not None:
            if len(visualisation.images) != len(self.channels) or visualisation.images.dim() != 4:
                raise InputError(f"the visualisation has {len(visualisation.images)} images; give one 2-D image per "
                                 f"channel of these top patches ({len(self.channels)}), in their order")
            leading = visualisation.images[list(chosen)]
        crops = self.crops()
        return display().plot_top_patches([crops[i] for i in chosen], [f"{self.layer}[{self.channels[i]}]" for i in chosen],
                                          crop_pixels, leading)


class _StopForward(Exception):
    """Raised by the hook once the layer has run, so the rest of the network is skipped."""


def top_patches(model: nn.Module, layer: ModuleLike | None, data: Dataset | DataLoader, k: int = 9,
                channels: Sequence[int] | None = None, batch_size: int = 64, num_workers: int = 0,
                progress: bool = True) -> TopPatches:
    """Stream ``data`` once and keep, for each channel of ``layer``, its ``k`` top activations.

    ``data`` is a Dataset of images (C, H, W) or of (image, label, ...) tuples, or a DataLoader
    over one (it must not shuffle: sample indices are positions in the dataset).
    """
    if layer is None:
        raise LayerError("top_patches needs a layer: a dotted name or a module")
    name, module = resolve_layer(model, layer)
    check_int("k", k)
    check_int("batch_size", batch_size)
    chosen_channels = _checked_channels(channels)
    dataset, loader, first = _loader(data, batch_size, num_workers)
    device = model_device(model)
    one_at_a_time = mixes_samples(model)  # batch statistics: a sample's activations would depend on its batch
    best: _TopK | None = None
    seen, size = 0, None
    with evaluation(model), torch.no_grad():
        bar = tqdm(_batches(loader), desc=f"top patches of {name}", unit="batch", disable=not progress)
        for batch in bar:
            images = _images(batch).to(device, non_blocking=True)
            size = size or tuple(images.shape[1:])
            if tuple(images.shape[1:]) != size:
                raise InputError(f"the images are of different sizes ({size} and {tuple(images.shape[1:])}): one "
                                 "receptive field maps the layer's positions to input boxes; resize them to one size")
            parts = images.split(1) if one_at_a_time else (images,)
            activation = torch.cat([_layer_output(model, module, name, part) for part in parts])
            if chosen_channels is not None:
                activation = activation[:, _channel_index(chosen_channels, activation.shape[1], device)]
            sample = torch.arange(first + seen, first + seen + len(images), device=device)
            batch_best = _TopK.of_batch(activation, sample)
            best = (batch_best.sorted() if best is None else best.merge(batch_best)).truncate(k)
            seen += len(images)
    if best is None or size is None:
        raise InputError("the dataset is empty")
    best = _merge_across_ranks(best, k)
    field = receptive_field(model, name, (int(size[-2]), int(size[-1])), in_channels=int(size[0]))
    best = best.pad(k)
    boxes = field.boxes(best.positions.clamp_min(0))
    chosen = chosen_channels if chosen_channels is not None else list(range(best.values.shape[0]))
    return TopPatches(name, chosen, best.values.cpu(), best.indices.cpu(), best.positions.cpu(), boxes.cpu(), field, dataset)


@dataclass
class _TopK:
    values: torch.Tensor     # (C, m)
    indices: torch.Tensor    # (C, m)
    positions: torch.Tensor  # (C, m, 2)

    @classmethod
    def of_batch(cls, activation: torch.Tensor, sample: torch.Tensor) -> "_TopK":
        n, c, h, w = activation.shape
        values, flat = activation.flatten(2).max(dim=2)  # (N, C): first maximum in row-major order
        positions = torch.stack([flat // w, flat % w], dim=-1)  # (N, C, 2)
        return cls(values.T, sample.expand(c, n).clone(), positions.transpose(0, 1))

    def merge(self, other: "_TopK") -> "_TopK":
        return _TopK(*(torch.cat(pair, dim=1) for pair in zip(self.parts(), other.parts()))).sorted()

    def parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.values, self.indices, self.positions

    def sorted(self) -> "_TopK":
        """Best first; two stable sorts (by sample index, then value) send ties to the smaller index."""
        by_index = torch.sort(self.indices, dim=1, stable=True).indices
        parts = [_take(t, by_index) for t in self.parts()]
        by_value = torch.sort(parts[0], dim=1, descending=True, stable=True).indices
        return _TopK(*(_take(t, by_value) for t in parts))

    def truncate(self, k: int) -> "_TopK":
        return _TopK(self.values[:, :k], self.indices[:, :k], self.positions[:, :k])

    def pad(self, k: int) -> "_TopK":
        missing = k - self.values.shape[1]
        if missing <= 0:
            return self
        c = self.values.shape[0]
        return _TopK(torch.cat([self.values, self.values.new_full((c, missing), float("-inf"))], 1),
                     torch.cat([self.indices, self.indices.new_full((c, missing), -1)], 1),
                     torch.cat([self.positions, self.positions.new_zeros((c, missing, 2))], 1))


def _take(tensor: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    if tensor.dim() == 3:
        return tensor.gather(1, order.unsqueeze(-1).expand(-1, -1, tensor.shape[2]))
    return tensor.gather(1, order)


def _layer_output(model: nn.Module, module: nn.Module, name: str, images: torch.Tensor) -> torch.Tensor:
    kept: list[Any] = []

    def hook(_module: nn.Module, _inputs: tuple, output: Any) -> None:
        kept.append(output)
        raise _StopForward

    with forward_hooks([module], hook):
        try:
            model(images)
        except _StopForward:
            pass
    if not kept:
        raise LayerError(f"layer '{name}' was not called in the forward pass")
    output = kept[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        raise LayerError(f"layer '{name}' has no (N, C, H, W) output; choose a convolutional layer")
    return output


def _checked_channels(channels: Any) -> list[int] | None:
    if channels is None:
        return None
    if isinstance(channels, (torch.Tensor, np.ndarray)):  # an integer array of indices, as a list would be
        channels = channels.tolist() if channels.ndim == 1 else channels
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in channels):
        raise InputError(f"channels must be a sequence of channel indices (ints), got {channels!r:.80}")
    return [int(c) for c in channels]


def _batches(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches; images of different sizes, which a batch cannot hold, named as such."""
    try:
        yield from loader
    except RuntimeError as error:
        if "stack expects each tensor to be equal size" not in str(error):
            raise
        raise InputError("the images are of different sizes, which one batch cannot hold: resize them to one "
                         "size") from None


def _channel_index(channels: Sequence[int], available: int, device: torch.device) -> torch.Tensor:
    index = torch.as_tensor(list(channels), dtype=torch.long)
    if index.numel() == 0 or index.min() < 0 or index.max() >= available:
        raise InputError(f"channels must be indices in [0, {available}), got {list(channels)}")
    return index.to(device)


def _images(batch: Any) -> torch.Tensor:
    images = batch[0] if isinstance(batch, (list, tuple)) else batch
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.dtype.is_floating_point:
        raise InputError("the data must yield float image batches (N, C, H, W), or (images, labels) pairs")
    return images


def _image(item: Any) -> torch.Tensor:
    image = item[0] if isinstance(item, (list, tuple)) else item
    if not isinstance(image, torch.Tensor):
        raise InputError(f"the dataset's samples must be image tensors (C, H, W) to crop patches from, not "
                         f"{type(image).__name__}; give it a transform that makes tensors")
    return image


def _loader(data: Any, batch_size: int, num_workers: int) -> tuple[Dataset, DataLoader, int]:
    """The dataset, the loader to stream, and the dataset index of its first sample.

    The caller's own DataLoader is used as it is, unless a process group needs a shard of it.
    """
    if isinstance(data, DataLoader):
        batches = data.batch_sampler
        sampler = type(batches.sampler if isinstance(batches, BatchSampler) else data.sampler).__name__
        if type(batches) is not BatchSampler or sampler != "SequentialSampler":
            raise InputError(f"the DataLoader must take its samples in order, in batches (its sampler is {sampler}, "
                             f"its batch sampler {type(batches).__name__}); pass the Dataset instead")
        if batches.drop_last:
            raise InputError("the DataLoader drops its last batch (drop_last=True), whose samples would never be "
                             "seen; pass the Dataset instead")
        dataset, batch_size, num_workers = data.dataset, data.batch_size or batch_size, data.num_workers
    elif isinstance(data, Dataset) or hasattr(data, "__getitem__"):
        dataset = data
    else:
        raise InputError(f"data must be a Dataset or a DataLoader, not {type(data).__name__}")
    if not (dist.is_available() and dist.is_initialized()):
        if isinstance(data, DataLoader):
            return dataset, data, 0
        return dataset, DataLoader(dataset, batch_size=batch_size, num_workers=num_workers), 0
    rank, world = dist.get_rank(), dist.get_world_size()
    size = len(dataset)  # type: ignore[arg-type]
    start, stop = rank * size // world, (rank + 1) * size // world  # this rank's contiguous block
    collate = data.collate_fn if isinstance(data, DataLoader) else None
    shard = DataLoader(Subset(dataset, range(start, stop)), batch_size=batch_size, num_workers=num_workers,
                       collate_fn=collate)
    return dataset, shard, start


def _merge_across_ranks(best: _TopK, k: int) -> _TopK:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return best
    gathered = []
    for tensor in best.pad(k).parts():  # equal shapes on every rank for all_gather
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        gathered.append(torch.cat(parts, dim=1))
    # padded slots (value -inf, index -1) sort after every real entry
    return _TopK(*gathered).sorted().truncate(k)
