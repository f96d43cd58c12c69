"""The engine under the perturbation explainers (occlusion, RISE, feature ablation, Shapley
sampling, KernelSHAP, LIME): one clean forward resolves the targets, then perturbed copies of
the whole batch are built on the device a chunk at a time and scored under ``no_grad``, about
``max_batch`` samples per forward and no more than ``MEMORY_BUDGET`` holds, so memory is bounded
by the chunk however many perturbations a method asks for."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..core import (
    Call,
    Explainer,
    ModelInputs,
    TargetSelection,
    class_scores,
    mixes_samples,
    model_cache,
    neurons_of,
    probing,
)
from ..errors import ForwardError, TargetError

#: bytes the tensors of one forward of perturbed copies may hold at once (1 GiB, the gradient
#: explainers' budget): copies per forward are capped so that their measured peak fits
MEMORY_BUDGET = 2**30
#: on the CPU, what one forward's per-sample tensors may hold together at their peak: 32 MiB, or
#: the model's parameter bytes where they are more (a forward reads every weight once). Beyond it
#: larger batches ran slower per image there, their activations outgrowing the caches. Measured
#: at 224 px (no_grad, ms an image): resnet18 (6 MiB a sample) 31.3 at 8 a forward, 38.1 at 64;
#: mobilenet_v2 (10 MiB) 12.6 at 2, 36.8 at 64; a ViT-S (3.5 MiB) 58.0 at 16, 73.9 at 64; VGG11
#: the same at 2 and 64. Small inputs keep ``max_batch`` (resnet18 at 64 px: 0.5 MiB a sample)
CPU_CHUNK_BYTES = 2**25

#: ``copies(first, stop)``: perturbations first..stop-1 of the batch, (stop - first, N, *x.shape[1:])
CopyMaker = Callable[[int, int], torch.Tensor]


def clean_targets(explainer: Explainer, call: Call, method: str) -> tuple[TargetSelection, Any]:
    """The clean forward, without a graph: the resolved targets and what scores a copy (the class
    indices (N, K), or the user's callable). Neuron targets are refused: copies are scored at
    the output."""
    if neurons_of(call.target):
        raise TargetError(f"{method} scores perturbed copies of the input: give classes or a callable, not neurons")
    selection, _ = explainer.forward_with_targets(call, graph=False)
    if selection.classes:
        return selection, selection.indices
    target: Callable[[Any], Any] = call.target  # type: ignore[assignment]  # not classes: the user's callable
    width = selection.scores.shape[1]

    def held(output: Any) -> Any:  # the user's callable, held to the clean call's number of targets
        values = target(output)
        shaped = isinstance(values, torch.Tensor) and values.dim() in (1, 2)  # others: refused with the scores' checks
        given = values.shape[1] if shaped and values.dim() == 2 else 1
        if shaped and given != width:
            raise TargetError(f"the target callable gave {given} scores per perturbed copy and {width} per input: it "
                              "must give the same targets whatever the batch")
        return values

    return selection, held


def perturbed_scores(model: nn.Module, call: Call, wanted: Any, count: int, copies: CopyMaker, max_batch: int,
                     probability: bool = False) -> torch.Tensor:
    """The target scores (count, N, K) of ``count`` perturbed copies of the batch, in float32 or
    the model's float64; a class's score is its logit, or its probability with
    ``probability=True``. A model whose forward mixes samples gets one copy per forward. Chunks
    are capped so that their peak stays within ``MEMORY_BUDGET`` (see ``forward_memory``), and
    on the CPU their per-sample part within ``CPU_CHUNK_BYTES``."""
    n = call.inputs.batch_size
    per_chunk = 1 if mixes_samples(model) else max(1, max_batch // n)
    scores = []
    with torch.no_grad():
        if per_chunk > 1 and count > 1:  # the budget can only lower a chunk of several copies
            fixed, per_sample, told_apart, weights = forward_memory(model, call)
            if per_sample:
                per_chunk = max(1, min(per_chunk, (MEMORY_BUDGET - fixed) // (per_sample * n)))
                if call.x.device.type == "cpu" and told_apart:  # per_sample may be all fixed otherwise
                    # a forward reads every weight once: chunks as large as the weights keep that read shared
                    per_chunk = max(1, min(per_chunk, max(CPU_CHUNK_BYTES, weights) // (per_sample * n)))
        for first in range(0, count, per_chunk):
            stop = min(count, first + per_chunk)
            output = call.model_inputs(copies(first, stop).flatten(0, 1)).run(model, fresh=True)
            scores.append(_scores(wanted, output, stop - first, n, probability))
    scores_ = torch.cat(scores)
    if not bool(torch.isfinite(scores_).all()):  # one host read per call
        raise TargetError("the target's scores on perturbed copies are not all finite: the baseline or masks take the "
                          "model outside its domain (a log of 0, a division by 0); choose another baseline")
    return scores_


class ForwardMemory(NamedTuple):
    """What ``forward_memory`` measured: bytes that do not grow with the batch and bytes per
    sample, whether the runs told the two apart, and the bytes of the model's parameters."""

    fixed: int
    per_sample: int
    told_apart: bool
    weights: int


def forward_memory(model: nn.Module, call: Call) -> ForwardMemory:
    """The bytes a forward's new tensors hold at their peak, fixed and per sample: measured
    once per model (until one of its modules is replaced), input shapes, autocast state and kind
    of target, from the call's first sample run alone and twice over, so what does not grow with
    the batch is told apart from what does. A first unmeasured run fills what a model makes once
    (autocast's copies of the weights, lazy buffers). The forwards run on copies of the input with
    the random state put back, and score nothing. A batch of two that measures no more than one
    (allocations that differ between runs) counts everything as per sample: slower, never over;
    ``told_apart`` is then False."""
    cache, key = model_cache(model), _memory_key(call)
    if key not in cache:
        try:
            cache[key] = _measured(model, call.inputs.sample(0), 1)
        except ForwardError:  # a forward that needs more than one sample (a squeeze before the head): the batch
            cache[key] = _measured(model, call.inputs, call.inputs.batch_size)
    return cache[key]


def _measured(model: nn.Module, unit: ModelInputs, samples: int) -> ForwardMemory:
    """``forward_memory`` from ``unit`` (``samples`` rows) run alone and twice over."""
    x = unit.primary.clone()  # a model may write its input
    device = x.device
    accelerator = [device] if device.type == "cuda" else []  # other devices' generators: the CPU's only
    with probing(model), torch.random.fork_rng(devices=accelerator, device_type="cuda"):
        _, alone, twice = (_peak_bytes(model, unit.with_primary(batch)) for batch in (x, x, torch.cat([x, x])))
    per_unit = twice - alone if twice > alone else max(alone, 1)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return ForwardMemory(max(0, alone - per_unit), -(-per_unit // samples), twice > alone, weights)


def _memory_key(call: Call) -> tuple:
    leaves = tree_leaves((call.inputs.args, call.inputs.kwargs))
    device = call.x.device.type
    try:
        autocast = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device)
    except RuntimeError:  # a device type without autocast
        autocast = False
    return ("forward memory", tuple((tuple(t.shape[1:]), t.dtype, t.device) for t in leaves if isinstance(t, torch.Tensor)),
            autocast, callable(call.target))


def _peak_bytes(model: nn.Module, inputs: ModelInputs) -> int:
    with LivePeak() as peak:
        inputs.run(model, fresh=True)  # as the copies' forwards run
    return peak.bytes


class LivePeak(TorchDispatchMode):
    """The most bytes held at once by the storages that ops made inside the block (views and
    in-place results make none; a storage counts until it is freed, whatever still points at it)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        given = set(map(_pointer, tree_leaves((args, kwargs))))  # before the op: an out= it grows counts
        out = func(*args, **(kwargs or {}))
        self.live = {pointer: kept for pointer, kept in self.live.items() if not kept[0].expired()}
        for tensor in tree_leaves(out):
            pointer = _pointer(tensor)
            if pointer is not None and pointer not in given and pointer not in self.live:
                storage = tensor.untyped_storage()
                self.live[pointer] = (StorageWeakRef(storage), storage.nbytes())
        self.bytes = max(self.bytes, sum(size for _, size in self.live.values()))
        return out


def _pointer(value: Any) -> int | None:
    """The address of a tensor's storage (None for anything else, or a tensor without a plain
    storage: sparse, a wrapper subclass)."""
    if not isinstance(value, torch.Tensor) or value.device.type == "meta":  # meta tensors hold no memory
        return None
    try:
        return value.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def _scores(wanted: Any, output: Any, copies: int, n: int, probability: bool) -> torch.Tensor:
    """The target scores (copies, N, K) of a copy-major output."""
    if isinstance(wanted, torch.Tensor):  # class indices (N, K), the same for every copy
        logits = class_scores(output)
        if probability and logits.shape[1] == 1:
            raise TargetError("the model gives one score per sample, whose softmax is always 1, so every copy would "
                              "score the same; use score='logit', or a callable target (a sigmoid of the score)")
        logits = logits.to(score_dtype(logits))
        values = (logits.softmax(dim=1) if probability else logits).gather(1, wanted.repeat(copies, 1))
    else:
        values = wanted(output)
        if not isinstance(values, torch.Tensor) or not values.dtype.is_floating_point:
            raise TargetError("a target callable must return a floating tensor of shape (N,) or (N, K)")
        values = values.to(score_dtype(values))
        values = values.unsqueeze(1) if values.dim() == 1 else values
        if values.dim() != 2 or len(values) != copies * n:
            raise TargetError(f"the target callable returned {tuple(values.shape)} scores for {copies * n} perturbed "
                              f"copies: it must give one row per sample of the output it is given, whatever its size")
    return values.reshape(copies, n, -1)


def score_dtype(values: torch.Tensor) -> torch.dtype:
    """Scores keep float64; half precision is read in float32."""
    return torch.float64 if values.dtype == torch.float64 else torch.float32
