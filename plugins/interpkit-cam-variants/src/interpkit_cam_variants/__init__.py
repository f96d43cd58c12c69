"""The CAM family as interpkit plugins: GradCAM++ (Chattopadhyay et al., 2018), LayerCAM (Jiang
et al., 2021), XGradCAM (Fu et al., 2020), HiResCAM (Draelos and Carin, 2020), EigenCAM
(Muhammad and Yeasin, 2020), EigenGradCAM, ScoreCAM (Wang et al., 2020), AblationCAM (Desai and
Ramaswamy, 2020), and the variants pytorch-grad-cam and torchcam add (GradCAMElementWise, SegEigenCAM,
KPCA-CAM, SSCAM, ISCAM, SmoothGrad-CAM++, ShapleyCAM, FinerCAM, FullGrad, RefineCAM) and Deep
Feature Factorization (``deep_feature_factorization``).

Each reuses interpkit's GradCAM entirely (layer choice, targets, one forward and one batched
backward, ReLU, upsampling, ``eigen_smooth``, hook hygiene) and overrides only the weights of the
channels from the layer's activations ``A`` (N, C, *grid) and gradients ``G`` (N, K, C, *grid),
on grids of any rank; ScoreCAM's and AblationCAM's weights come from the target's scores on
perturbed copies of the batch instead.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_leaves

import interpkit
from interpkit import GradCAM
from interpkit.core import (
    Call,
    ChannelsFirst,
    ChannelsLast,
    LayerExplainer,
    LayerGradients,
    check_int,
    check_number,
    check_seed,
    class_scores,
    forward_hooks,
    normal_draws,
    normalize_maps,
    per_target_gradients,
    select_targets,
)
from interpkit.explainers import perturbed_scores, principal_projection, upsample

from .factorization import Factorization, deep_feature_factorization, nmf  # noqa: F401 (published here)

__version__ = "0.3.0"


def _grid_sum(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(3).sum(-1)


class GradCAMPlusPlus(GradCAM):
    """GradCAM with pixel-wise weights: ``w_c = sum_ij alpha_ij ReLU(G_ij)`` where
    ``alpha = G^2 / (2 G^2 + sum_ab A_ab G^3)`` (the exponential-score closed form)."""

    name = "gradcam_plus_plus"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        squared = gradients.pow(2)
        grid_rank = activation.dim() - 2
        total = activation.flatten(2).sum(-1).view(activation.shape[0], 1, -1, *[1] * grid_rank)  # (N, 1, C, 1..)
        denominator = 2 * squared + total * gradients.pow(3)
        # no epsilon in the denominator: with small gradients it would outweigh G^2 itself
        safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(denominator != 0, squared / safe, torch.zeros_like(gradients))
        return _grid_sum(alpha * gradients.clamp_min(0))  # (N, K, C)


class SmoothGradCAMPlusPlus(GradCAMPlusPlus):
    """SmoothGrad-CAM++ (Omeiza et al., 2019): GradCAM++ with the layer's gradients averaged over
    ``samples`` noisy copies of the input, ``alpha = D2 / (2 D2 + sum_ab A_ab D3)`` and
    ``w_c = sum_ij alpha_ij ReLU(D1_ij)``, where ``Dk`` is the mean k-th power of the gradient
    over the copies and ``A`` the clean input's activation. Copy ``s`` adds noise of standard
    deviation ``std``: the ``s``-th draw of the input's shape (C, *grid) from a generator seeded
    with ``seed``, shared by the batch's images. The copies are explained for the clean input's
    targets, ``max_batch`` copies a forward."""

    name = "smoothgradcam_plus_plus"

    def __init__(self, model, layer=None, upsample: bool = True, relu: bool = True, samples: int = 4,
                 std: float = 0.3, seed: int = 0, max_batch: int = 64, eigen_smooth: bool = False) -> None:
        super().__init__(model, layer, upsample=upsample, relu=relu, eigen_smooth=eigen_smooth)
        self.samples, self.std = check_int("samples", samples), check_number("std", std)
        self.seed, self.max_batch = check_seed(seed), check_int("max_batch", max_batch)
        if isinstance(layer, list) and len(layer) > 1:
            raise interpkit.LayerError("SmoothGradCAMPlusPlus reads one layer; name one")

    def layer_map(self, call: Call, found: LayerGradients) -> torch.Tensor:
        inputs, n = call.x, len(call.x)
        generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        noise = torch.stack([self.std * normal_draws(inputs.shape[1:], generator, inputs) for _ in range(self.samples)])
        copies = (inputs.unsqueeze(0) + noise.unsqueeze(1)).flatten(0, 1)  # sample-major (S * N, ...)
        # classes are pinned to the clean input's; a callable or neurons are the target itself on every copy
        targets = found.selection.indices.repeat(self.samples, 1) if found.selection.classes else call.target
        moments = torch.zeros(3, *found.gradients.shape, dtype=found.gradients.dtype, device=inputs.device)
        per_forward = max(self.max_batch // n, 1) * n
        for first in range(0, len(copies), per_forward):
            part = slice(first, first + per_forward)
            noisy = self.layer_gradients(call.with_(x=copies[part], target=targets[part] if found.selection.classes
                                                    else targets))
            gradients = noisy.gradients.reshape(-1, *found.gradients.shape)  # (copies in part / N, N, K, C, *grid)
            for power in range(3):
                moments[power] += gradients.pow(power + 1).sum(dim=0)
        mean, squared, cubed = moments / self.samples
        total = found.activation.flatten(2).sum(-1).view(n, 1, found.activation.shape[1],
                                                          *[1] * (found.activation.dim() - 2))
        denominator = 2 * squared + total * cubed
        alpha = torch.where(denominator != 0, squared / torch.where(denominator != 0, denominator, 1.0), 0.0)
        return self.combine(_grid_sum(alpha * mean.clamp_min(0)), found.activation)  # weights (N, K, C)


class LayerCAM(GradCAM):
    """Element-wise weights: ``ReLU(G_c)`` at every position."""

    name = "layercam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.clamp_min(0)


class XGradCAM(GradCAM):
    """Axiom-based weights: ``w_c = sum_ij G_ij A_ij / sum_ij A_ij`` (0 for a channel whose
    activations sum to 0; pytorch-grad-cam adds 1e-7 to that sum instead)."""

    name = "xgradcam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        mass = activation.flatten(2).sum(-1).unsqueeze(1)  # (N, 1, C)
        weighted = _grid_sum(gradients * activation.unsqueeze(1))
        return torch.where(mass != 0, weighted / torch.where(mass != 0, mass, 1.0), 0.0)


class HiResCAM(GradCAM):
    """Element-wise ``G_c * A_c`` summed over channels: the exact contribution of each position
    for a model whose head is linear after the layer (Draelos and Carin)."""

    name = "hirescam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients


class _Eigen(GradCAM):
    """A CAM that is a principal component by definition: ``eigen_smooth`` is always on."""

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("eigen_smooth") is False:
            raise interpkit.InputError(f"{type(self).__name__} is a principal component by definition; "
                                       "drop eigen_smooth=False")
        super().__init__(*args, **{**kwargs, "eigen_smooth": True})


class EigenCAM(_Eigen):
    """The first principal component of the activations alone (the same map for every target;
    the backward pass it shares with the family is not needed), oriented as
    ``interpkit.explainers.gradcam.principal_projection`` documents."""

    name = "eigencam"
    target_free = True

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return torch.ones(gradients.shape[:3], dtype=activation.dtype, device=activation.device)


class EigenGradCAM(_Eigen):
    """The first principal component of ``G_c * A_c``: EigenCAM made class-discriminative."""

    name = "eigengradcam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients


class GradCAMElementWise(GradCAM):
    """``sum_c ReLU(G_c * A_c)``: HiResCAM's element-wise terms, each clipped at 0 before the
    channel sum (pytorch-grad-cam's ``GradCAMElementWise``)."""

    name = "gradcam_elementwise"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients

    def combine(self, weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        terms = (weights * activation.unsqueeze(1)).clamp_min(0)
        return principal_projection(terms) if self.eigen_smooth else terms.sum(dim=2)


class SegEigenCAM(_Eigen):
    """Seg-Eigen-CAM (Chung and Ying, 2025): the first principal component of ``|G_c| * A_c``,
    its sign chosen as the paper's Eq. 13 says: flipped where the map's most negative value is
    larger in magnitude than its most positive one."""

    name = "seg_eigencam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.abs()

    def combine(self, weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        projection = super().combine(weights, activation)
        flat = projection.flatten(2)
        flip = flat.amin(dim=-1).abs() > flat.amax(dim=-1).abs()
        return torch.where(flip.view(*flip.shape, *[1] * (projection.dim() - 2)), -projection, projection)


class ShapleyCAM(GradCAM):
    """ShapleyCAM (Cai et al., 2025): GradCAM with each channel weighted by the grid mean of
    ``G - H A / 2``, where ``H A`` is the Hessian of the target's score with respect to the
    layer's output times that output: the second-order estimate of the channels' Shapley
    values. Each target takes one backward that keeps its graph and one more for the product.
    Where the score is piecewise linear in the layer (a logit after ReLUs and linear layers),
    ``H A`` is 0 and the map is GradCAM's; the paper pairs it with ``rest_target``."""

    name = "shapleycam"

    def forward_with_targets(self, *args, **kwargs):
        # fused attention kernels have no second derivative; the math kernel computes the same
        with sdpa_kernel(SDPBackend.MATH):
            return super().forward_with_targets(*args, **kwargs)

    def target_gradients(self, selection, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        try:
            return self._shapley_gradients(selection, outputs)
        except RuntimeError as error:
            if "derivative for" not in str(error) and "double backward" not in str(error):
                raise
            raise interpkit.InputError(f"ShapleyCAM needs second derivatives, which an op of this model does not have "
                                       f"({' '.join(str(error).split())[:160]}); use GradCAM") from error

    def _shapley_gradients(self, selection, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        columns = []
        for k in range(selection.scores.shape[1]):
            gradients = torch.autograd.grad(selection.scores[:, k].sum(), outputs, create_graph=True,
                                            retain_graph=True, materialize_grads=True)
            column = []
            for gradient, output in zip(gradients, outputs):  # each layer's own Hessian: no cross-layer terms
                product = torch.zeros_like(output)
                if gradient.requires_grad:  # a constant gradient has no Hessian
                    _refuse_once_differentiable(gradient)
                    (found,) = torch.autograd.grad(gradient, output, grad_outputs=output.detach(), retain_graph=True,
                                                   allow_unused=True, materialize_grads=True)
                    product = found
                column.append((gradient - 0.5 * product).detach())
            columns.append(column)
        return [torch.stack(parts, dim=1) for parts in zip(*columns)]


def _refuse_once_differentiable(gradient: torch.Tensor) -> None:
    """A custom Function marked once-differentiable leaves an ``Error`` node in the gradient's
    graph, through which the Hessian would silently be 0."""
    seen, stack = set(), [gradient.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in ("Error", "DelayedError"):
            raise interpkit.InputError("ShapleyCAM needs second derivatives, but an op after the layer is a custom "
                                       "autograd Function marked once_differentiable; use GradCAM")
        stack.extend(next_node for next_node, _ in node.next_functions)


def rest_target(classes):
    """The ReST score the ShapleyCAM paper explains, ``z_c - CE(z, c) = z_c + log softmax(z)_c``
    for the model's logits ``z``: a callable target giving (N, K) scores. ``classes`` is an int or
    a list of K ints (the same for every sample), or a LongTensor (N,) or (N, K) of each sample's
    classes, which only fits outputs of exactly those N samples."""
    if isinstance(classes, torch.Tensor):
        chosen = classes
    elif isinstance(classes, int) and not isinstance(classes, bool):
        chosen = torch.tensor([classes])
    elif isinstance(classes, (list, tuple)) and classes and all(isinstance(c, int) and not isinstance(c, bool)
                                                               for c in classes):
        chosen = torch.tensor(list(classes))
    else:
        raise interpkit.TargetError(f"rest_target takes an int, a list of ints or a LongTensor (N,) or (N, K), "
                                    f"not {classes!r}")
    if chosen.is_floating_point() or chosen.dtype == torch.bool or chosen.dim() > 2 or chosen.numel() == 0:
        raise interpkit.TargetError(f"rest_target takes integer classes, not {classes!r}")
    per_sample = isinstance(classes, torch.Tensor)

    def score(output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            raise interpkit.TargetError("rest_target needs the model's logits (N, classes)")
        columns = chosen.to(output.device)
        if per_sample:
            columns = columns.view(-1, 1) if columns.dim() == 1 else columns
            if len(columns) != len(output):
                raise interpkit.TargetError(
                    f"rest_target was given classes for {len(columns)} samples but scores an output of {len(output)} "
                    "rows (samples explained one at a time, or perturbed copies); give a list of classes shared by "
                    "every sample")
        else:
            columns = columns.view(1, -1).expand(len(output), -1)
        if columns.min() < 0 or columns.max() >= output.shape[1]:
            raise interpkit.TargetError(f"rest_target's classes {classes!r} do not fit logits of shape "
                                        f"{tuple(output.shape)}")
        return (output + output.log_softmax(dim=1)).gather(1, columns)

    return score


class FinerCAM(LayerExplainer):
    """Finer-CAM (Zhang et al., 2025): a CAM of the target class against the classes the model
    finds most similar. For target class ``c`` with logit ``z_c``, the comparison classes are
    those whose logits are nearest to ``z_c`` (ranks ``comparisons``: 1 is the nearest), and the
    map explains ``sum_j p_j (z_c - alpha z_j) / (sum_j p_j + 1e-9)`` with ``p`` the softmax,
    through the ``base`` CAM (GradCAM by default; any gradient CAM, built with ``options``; those
    that score copies of the input are refused). Targets are classes; the explanation's scores are the
    Finer scores. ``comparisons=3`` takes the three nearest classes, or as many as the model has
    besides ``c``, as pytorch-grad-cam does; explicit ranks must exist. The target itself is
    rank 0 even where another class ties with it."""

    name = "finercam"
    class_targets_only = True
    scores_are_outputs = False  # the Finer scores, which the maps explain

    def __init__(self, model, layer=None, base: type = GradCAM, alpha: float = 1.0,
                 comparisons: int | tuple[int, ...] = 3, **options) -> None:
        super().__init__(model, layer)
        if not (isinstance(base, type) and issubclass(base, GradCAM)):
            raise interpkit.InputError(f"base must be a CAM class such as GradCAM, not {base!r}")
        if issubclass(base, (_PerturbationCAM, SmoothGradCAMPlusPlus)):
            raise interpkit.InputError(f"FinerCAM chooses its comparison classes from the clean input's logits; "
                                       f"{base.__name__} scores perturbed or noisy copies, on which they would be "
                                       "chosen again; use a gradient CAM as base")
        self.base = base(model, layer, **options)
        self.alpha = check_number("alpha", alpha)
        if isinstance(comparisons, tuple):
            if not comparisons or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in comparisons):
                raise interpkit.InputError(f"comparisons must be ranks >= 1 (1 the nearest class), not {comparisons!r}")
            self.ranks, self.fill = comparisons, False
        else:
            self.ranks, self.fill = tuple(range(1, check_int("comparisons", comparisons) + 1)), True

    def explain(self, call: Call) -> interpkit.Explanation:
        chosen = {}

        def finer(output):
            logits = class_scores(output)
            selection = select_targets(call.target, output, len(logits))
            if not selection.classes:
                raise interpkit.TargetError("FinerCAM compares classes: give class indices, not neurons or a callable")
            chosen["classes"] = classes = selection.indices  # (N, K)
            return self.finer_scores(logits, classes)

        found = self.base.explain(call.with_(target=finer))
        return replace(found, targets=chosen["classes"], class_targets=True, method=self.name)

    def finer_scores(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The Finer score (N, K) of each target class against its nearest classes."""
        n, count = logits.shape
        ranks = [r for r in self.ranks if r < count] if self.fill else list(self.ranks)
        if not ranks or max(ranks) >= count:
            raise interpkit.TargetError(f"FinerCAM compares with the classes at ranks {self.ranks}, but the model has "
                                        f"{count} classes; choose ranks below {count}")
        main = logits.gather(1, classes)  # (N, K)
        distance = (logits.detach().unsqueeze(1) - main.detach().unsqueeze(2)).abs()  # (N, K, classes)
        distance.scatter_(2, classes.unsqueeze(2), -1.0)  # the target is rank 0
        nearest = distance.argsort(dim=2, stable=True)[:, :, ranks]  # (N, K, R)
        others = logits.unsqueeze(1).expand(n, classes.shape[1], count).gather(2, nearest)
        weights = logits.softmax(dim=1).unsqueeze(1).expand(n, classes.shape[1], count).gather(2, nearest)
        return (weights * (main.unsqueeze(2) - self.alpha * others)).sum(2) / (weights.sum(2) + 1e-9)


_SCALES = {"layer": 1e-6, "channel": 1e-7}  # the authors' code and pytorch-grad-cam add these to the span


class FullGrad(interpkit.Explainer):
    """FullGrad (Srinivas and Fleuret, 2019): ``psi(|dS/dx * x|) + sum_l sum_c psi(|dS/dz_l * b_l|)``
    over the input and every bias of the network that lies on its grid: each convolution's bias
    and each batch norm's effective bias ``beta - mu gamma / sqrt(var + eps)`` (1-D to 3-D),
    times the gradient of the target's score with respect to that layer's output ``z_l``. ``psi``
    takes the absolute value, min-max scales (``scale="layer"``: each layer's whole tensor, as the
    authors' code; ``"channel"``: each channel alone, as pytorch-grad-cam), upsamples bilinearly
    (``align_corners=False``; the authors' code uses True) and sums the channels. Biases off the
    grid (linear layers) are not spatial and, as in the paper, not in the map. A module called
    several times adds a term per call. Batch norms without running statistics have no fixed
    bias and are refused."""

    name = "fullgrad"
    supports = frozenset({"1d", "2d", "3d", "several_inputs"})

    def __init__(self, model, scale: str = "layer") -> None:
        super().__init__(model)
        if scale not in _SCALES:
            raise interpkit.InputError(f"scale must be 'layer' or 'channel', not {scale!r}")
        self.scale = scale

    def explain(self, call: Call) -> interpkit.Explanation:
        x = call.x.clone().requires_grad_(True)
        grid = tuple(x.shape[2:])
        biases = {module: bias for module in self.model.modules() if (bias := _effective_bias(module)) is not None}
        linear = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
        outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (output, bias) per call of a biased module

        def record(module, _inputs, output):
            if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor) and output.dim() > 2:
                raise interpkit.LayerError(f"FullGrad places bias terms on the input's grid, but a Linear layer adds its "
                                           f"bias at each of {output.shape[1]} positions (tokens), which it cannot place "
                                           "there; FullGrad explains convolutional networks")
            if isinstance(module, torch.nn.Linear):
                return None  # a bias on (N, features) is not spatial: the paper leaves it out of the map
            if isinstance(output, torch.Tensor) and output.dim() == x.dim() and output.requires_grad:
                outputs.append((output, biases[module]))
                return output.clone()  # an in-place op downstream must not change the tensor differentiated
            return None

        selection, _ = self.forward_with_targets(call.with_(x), mode=forward_hooks(list(biases) + linear, record))
        if _other_tensors(call):  # another input's branch has biases too: only those computed from x are its terms
            reaches = _reaches(x)
            outputs = [(output, bias) for output, bias in outputs if reaches(output.grad_fn)]
        gradients = per_target_gradients(selection.scores, [x] + [o for o, _ in outputs], selection.graph_elements)
        maps = self.scaled(gradients[0] * x.detach().unsqueeze(1)).sum(dim=2)
        for gradient, (output, bias) in zip(gradients[1:], outputs):
            terms = gradient * bias.to(gradient.dtype).view(1, 1, -1, *[1] * len(grid))
            maps = maps + upsample(self.scaled(terms).sum(dim=2), grid)
        return self.result(maps, selection, interpkit.MapKind.INPUT_GRID)

    def scaled(self, terms: torch.Tensor) -> torch.Tensor:
        """``|terms|`` (N, K, C, *grid) min-max scaled per sample and target, over the whole
        tensor or per channel."""
        start = 2 if self.scale == "layer" else 3
        flat = terms.abs().flatten(start)
        shifted = flat - flat.amin(dim=-1, keepdim=True)
        return (shifted / (shifted.amax(dim=-1, keepdim=True) + _SCALES[self.scale])).view_as(terms)


def _other_tensors(call: Call) -> bool:
    """Whether the model takes tensors besides the attributed one (in nested arguments too)."""
    leaves = tree_leaves((call.inputs.args, call.inputs.kwargs))
    return sum(isinstance(value, torch.Tensor) for value in leaves) > 1


def _reaches(leaf: torch.Tensor):
    """A test of whether an autograd node's graph reaches ``leaf``, its answers shared between
    calls, so that testing every layer's output walks the graph once (host work, no sync)."""
    known: dict = {}

    def reaches(root) -> bool:
        stack = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if node is None:
                continue
            children = [child for child, _ in node.next_functions if child is not None]
            if children_done:
                known[node] = getattr(node, "variable", None) is leaf or any(known[child] for child in children)
            elif node not in known:
                known[node] = False  # placeholder: a graph is acyclic, so no child reads it before it is set
                stack.append((node, True))
                stack.extend((child, False) for child in children if child not in known)
        return root is not None and known[root]

    return reaches


def _effective_bias(module: torch.nn.Module) -> torch.Tensor | None:
    """The constant a convolution or an eval-mode batch norm adds to each channel, or None."""
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return None if module.bias is None else module.bias.detach()
    if not isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return None
    if module.running_mean is None:
        raise interpkit.LayerError(f"FullGrad needs every batch norm's fixed bias, but {type(module).__name__} has no "
                                   "running statistics (track_running_stats=False)")
    scale = torch.rsqrt(module.running_var + module.eps)
    if module.weight is not None:
        scale = scale * module.weight.detach()
    shift = -module.running_mean * scale
    return shift if module.bias is None else shift + module.bias.detach()


class RefineCAM(LayerExplainer):
    """RefineCAM: the product of several layers' CAMs, each min-max scaled to [0, 1] at its
    layer's resolution, upsampled to the input and scaled again (as pytorch-grad-cam), the
    product scaled to [0, 1]; the deep layers'
    localisation denoises the shallow layers' detail. The layers' maps come from ``base``
    (GradCAM++ by default, as pytorch-grad-cam's; any class of the family, built with
    ``options``) in one forward and one batched backward. ``layer`` is a list; maps are always
    upsampled and kept positive."""

    name = "refinecam"

    def __init__(self, model, layer=None, base: type = GradCAMPlusPlus, **options) -> None:
        super().__init__(model, layer)
        if not (isinstance(base, type) and issubclass(base, GradCAM)):
            raise interpkit.InputError(f"base must be a CAM class such as GradCAMPlusPlus, not {base!r}")
        for fixed in ("upsample", "relu"):
            if options.get(fixed, True) is not True:
                raise interpkit.InputError(f"RefineCAM multiplies upsampled positive maps; drop {fixed}=False")
        self.base = base(model, layer, **options)

    def explain(self, call: Call) -> interpkit.Explanation:
        found = self.base.all_layer_gradients(call)
        grid = tuple(call.x.shape[2:])
        product = None
        for layer in found:
            scaled = upsample(normalize_maps(self.base.layer_map(call, layer).clamp_min(0), start_dim=2), grid)
            scaled = normalize_maps(scaled, start_dim=2)  # in [0, 1] again after the interpolation
            product = scaled if product is None else product * scaled
        return self.result(normalize_maps(product, start_dim=2), found[0].selection, interpkit.MapKind.INPUT_GRID,
                           found[-1].layer)


_KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")


class KPCACAM(GradCAM):
    """KPCA-CAM (Karmani et al., 2024): per image, the activation vectors of the layer's
    positions, centred, projected on their first kernel principal component, as scikit-learn's
    ``KernelPCA(n_components=1)`` does: the centred kernel matrix's top eigenvector times the
    square root of its eigenvalue, signed so that its largest-magnitude entry is positive. Kernels
    as scikit-learn's with its defaults (``gamma`` 1 / C, ``coef0`` 1, degree 3). The map is
    the same for every target; no gradient is needed. Where the top eigenvalue is repeated the
    component is not unique, and neither is the map (in any library)."""

    name = "kpca_cam"
    target_free = True

    def __init__(self, model, layer=None, upsample: bool = True, relu: bool = True, kernel: str = "sigmoid",
                 gamma: float | None = None, eigen_smooth: bool = False) -> None:
        super().__init__(model, layer, upsample=upsample, relu=relu, eigen_smooth=eigen_smooth)  # True is refused
        if kernel not in _KERNELS:
            raise interpkit.InputError(f"kernel must be one of {', '.join(_KERNELS)}, not {kernel!r}")
        self.kernel = kernel
        self.gamma = None if gamma is None else check_number("gamma", gamma)

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        n, c = activation.shape[:2]
        points = activation.flatten(2).transpose(1, 2).double()  # (N, P, C)
        points = points - points.mean(dim=1, keepdim=True)
        kernel = self._kernel(points, 1.0 / c if self.gamma is None else self.gamma)
        ones = torch.full_like(kernel, 1.0 / kernel.shape[-1])
        centred = kernel - ones @ kernel - kernel @ ones + ones @ kernel @ ones
        values, vectors = torch.linalg.eigh(centred)
        top = vectors[..., -1]  # (N, P): the largest eigenvalue's vector
        peak = top.gather(1, top.abs().argmax(dim=1, keepdim=True))
        projection = top * torch.where(peak < 0, -1.0, 1.0) * values[:, -1:].clamp_min(0).sqrt()
        maps = projection.to(activation.dtype).view(n, 1, *activation.shape[2:])
        return maps.expand(n, gradients.shape[1], *activation.shape[2:])

    def _kernel(self, points: torch.Tensor, gamma: float) -> torch.Tensor:
        inner = points @ points.transpose(1, 2)
        if self.kernel == "linear":
            return inner
        if self.kernel == "poly":
            return (gamma * inner + 1) ** 3
        if self.kernel == "sigmoid":
            return torch.tanh(gamma * inner + 1)
        if self.kernel == "rbf":
            return torch.exp(-gamma * torch.cdist(points, points).square())
        norms = points.norm(dim=2, keepdim=True)
        both = norms * norms.transpose(1, 2)
        return torch.where(both > 0, inner / torch.where(both > 0, both, 1.0), 0.0)  # a zero vector's similarities: 0


class _PerturbationCAM(GradCAM):
    """A CAM whose channel weights come from the target's scores on perturbed copies of the
    batch, one copy per channel (copy-major, so a model's other inputs ride along), run in
    forwards of about ``max_batch`` samples. Targets are classes or a callable on the output
    (scored on the copies); neurons are refused."""

    def __init__(self, model, layer=None, upsample: bool = True, relu: bool = True, eigen_smooth: bool = False,
                 max_batch: int = 64) -> None:
        super().__init__(model, layer, upsample=upsample, relu=relu, eigen_smooth=eigen_smooth)
        self.max_batch = check_int("max_batch", max_batch)

    def layer_map(self, call: Call, found: LayerGradients) -> torch.Tensor:
        if found.selection.classes:
            target = found.selection.indices
        elif callable(call.target):  # a callable target scores the perturbed copies too
            target = call.target
        else:
            raise interpkit.TargetError(f"{type(self).__name__} scores perturbed copies of the input: give classes "
                                        "or a callable, not neurons")
        scores = self.channel_scores(call, found, target).permute(1, 2, 0)  # (N, K, C)
        return self.combine(self.weights_from(scores, found.selection.scores), found.activation)

    def channel_scores(self, call: Call, found: LayerGradients, target) -> torch.Tensor:
        """The target's scores (C, N, K) on the batch perturbed for each channel, through
        interpkit's perturbation engine."""
        raise NotImplementedError

    def weights_from(self, scores: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ScoreCAM(_PerturbationCAM):
    """Score-weighted CAM (Wang et al., 2020): each channel's activation, upsampled to the input
    (``align_corners=False``, as the authors' code) and min-max scaled to [0, 1], masks the
    input; the softmax over channels of the target's score on each masked copy weights them."""

    name = "scorecam"

    def channel_scores(self, call: Call, found: LayerGradients, target) -> torch.Tensor:
        inputs = call.x
        masks = upsample(found.activation, tuple(inputs.shape[2:]))  # (N, C, *input grid)
        flat = masks.flatten(2)
        low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
        masks = ((flat - low) / torch.where(high > low, high - low, 1.0)).view_as(masks)

        def masked(first: int, stop: int) -> torch.Tensor:
            channels = masks[:, first:stop].transpose(0, 1)  # (count, N, *grid): copy-major
            return inputs.unsqueeze(0) * channels.unsqueeze(2).to(inputs.dtype)

        return perturbed_scores(self.model, call, target, masks.shape[1], masked, self.max_batch)

    def weights_from(self, scores: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return scores.softmax(dim=-1)


def _unit_masks(activation: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Each channel min-max scaled to [0, 1] at the layer's resolution (``+ 1e-8`` below), then
    upsampled to the input's grid: torchcam's masks for its Score-CAM family."""
    flat = activation.flatten(2)
    shifted = flat - flat.amin(-1, keepdim=True)
    return upsample((shifted / (shifted.amax(-1, keepdim=True) + 1e-8)).view_as(activation), grid)


class _AveragedScoreCAM(_PerturbationCAM):
    """A Score-CAM whose channel scores are averaged over several versions of each mask."""

    def channel_scores(self, call: Call, found: LayerGradients, target) -> torch.Tensor:
        inputs = call.x
        masks = _unit_masks(found.activation, tuple(inputs.shape[2:]))  # (N, C, *grid)
        total = None
        for version in self.versions(masks, inputs.device):  # each (N, C, *grid)
            def masked(first: int, stop: int, version=version) -> torch.Tensor:
                return inputs.unsqueeze(0) * version[:, first:stop].transpose(0, 1).unsqueeze(2).to(inputs.dtype)

            scores = perturbed_scores(self.model, call, target, masks.shape[1], masked, self.max_batch)
            total = scores if total is None else total + scores
        return total / self.count

    def versions(self, masks: torch.Tensor, device: torch.device):
        """The versions of the masks to average over, one at a time (memory: one set of masks)."""
        raise NotImplementedError

    def weights_from(self, scores: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return scores.softmax(dim=-1)


class SSCAM(_AveragedScoreCAM):
    """Smoothed Score-CAM (Wang et al., 2020): the masks with Gaussian noise of standard
    deviation ``std`` added, ``samples`` times; the softmax over channels of the target's mean
    score on the noisy masked copies weights the channels. Sample ``s``'s noise is the ``s``-th
    draw of shape (C, *grid) from ``torch.Generator`` seeded with ``seed`` on the input's device,
    shared by the batch's images (torchcam draws it per image, so its maps depend on the batch)."""

    name = "sscam"

    def __init__(self, model, layer=None, upsample: bool = True, relu: bool = True, eigen_smooth: bool = False,
                 max_batch: int = 64, samples: int = 35, std: float = 2.0, seed: int = 0) -> None:
        super().__init__(model, layer, upsample=upsample, relu=relu, eigen_smooth=eigen_smooth, max_batch=max_batch)
        self.count, self.std = check_int("samples", samples), check_number("std", std)
        self.seed = check_seed(seed)

    def versions(self, masks: torch.Tensor, device: torch.device):
        generator = torch.Generator(device=device).manual_seed(self.seed)
        for _ in range(self.count):
            yield masks + self.std * normal_draws(masks.shape[1:], generator, masks)


class ISCAM(_AveragedScoreCAM):
    """Integrated Score-CAM (Naidu et al., 2020): the masks scaled by ``1/S, 2/S, ..., 1`` for
    ``samples`` = S (the paper's path from the baseline 0 to the mask), or by the given
    ``scales``; the softmax over channels of the mean score weights the channels. torchcam 0.5
    accumulates its coefficient (``coeff += (s + 1) / S``), so it scales the masks by 0.1, 0.3,
    ..., 5.5 for S = 10, up to 5.5 times the input; a test shows it."""

    name = "iscam"

    def __init__(self, model, layer=None, upsample: bool = True, relu: bool = True, eigen_smooth: bool = False,
                 max_batch: int = 64, samples: int = 10, scales=None) -> None:
        super().__init__(model, layer, upsample=upsample, relu=relu, eigen_smooth=eigen_smooth, max_batch=max_batch)
        samples = check_int("samples", samples)
        if scales is None:
            scales = [(s + 1) / samples for s in range(samples)]
        if not isinstance(scales, (list, tuple)) or not scales:
            raise interpkit.InputError(f"scales must be a non-empty list of numbers, not {scales!r}")
        self.scales = [check_number("scales", value) for value in scales]
        self.count = len(self.scales)

    def versions(self, masks: torch.Tensor, device: torch.device):
        for scale in self.scales:
            yield masks * scale


class AblationCAM(_PerturbationCAM):
    """Ablation-CAM (Desai and Ramaswamy, 2020): the relative drop of the target's score when
    a channel of the layer is set to zero, ``(S - S_without_c) / S``, weights that channel. The
    layer's output must be a channels-first or channels-last grid (token layers are refused:
    whether a class token's features are ablated too is a choice the method does not make). pytorch-grad-cam sets the channel to its
    batch minimum minus 1e7 instead wherever the layer's values are not all non-negative."""

    name = "ablationcam"
    supports = frozenset({"1d", "2d", "3d", "several_inputs"})

    def channel_scores(self, call: Call, found: LayerGradients, target) -> torch.Tensor:
        inputs = call.x
        choice = next(choice for choice in self.resolve(call) if choice.name == found.layer)
        module = self.model.get_submodule(found.layer)
        if not isinstance(choice.layout, (ChannelsFirst, ChannelsLast)):  # tokens: whether prefix ones go too is open
            raise interpkit.LayerError(f"AblationCAM sets channels of '{found.layer}' to zero on a channels-first or "
                                       f"channels-last grid, not a {type(choice.layout).__name__}")
        axis = 1 if isinstance(choice.layout, ChannelsFirst) else -1
        shape = tuple(found.activation.movedim(1, axis).shape[1:])  # the module's own output, per sample
        ablated: list[int] = []  # the channels of the chunk being scored, one per copy

        def zero_channels(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or tuple(output.shape[1:]) != shape:
                raise interpkit.LayerError(f"AblationCAM sets channels of '{found.layer}' to zero and needs its output "
                                           f"as the grid {shape} it gave; choose a layer called once per forward")
            output = output.clone()
            for copy, channel in enumerate(ablated):
                output[copy * len(inputs):(copy + 1) * len(inputs)].select(axis, channel).zero_()
            return output

        def repeated(first: int, stop: int) -> torch.Tensor:
            ablated[:] = range(first, stop)
            return inputs.unsqueeze(0).expand(stop - first, *inputs.shape)

        with forward_hooks([module], zero_channels):
            return perturbed_scores(self.model, call, target, found.activation.shape[1], repeated, self.max_batch)

    def weights_from(self, scores: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        before = original.float().unsqueeze(-1)  # (N, K, 1)
        return (before - scores) / torch.where(before != 0, before, 1.0)


@interpkit.hookimpl
def interpkit_register_explainers(register):
    for cls in (GradCAMPlusPlus, LayerCAM, XGradCAM, HiResCAM, EigenCAM, EigenGradCAM, ScoreCAM, AblationCAM,
                GradCAMElementWise, SegEigenCAM, KPCACAM, SSCAM, ISCAM, SmoothGradCAMPlusPlus,
                ShapleyCAM, FinerCAM, FullGrad, RefineCAM):
        register(cls)
