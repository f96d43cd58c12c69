"""Metric.score_each: several explanations of the same inputs scored as separate calls would
score them, with the forwards that do not depend on the maps run once per distinct targets."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from models import SmallCNN

from interpkit import GradCAM, InputError, Saliency
from interpkit.dataset.evaluation import score_explanations
from interpkit.metrics import (
    Deletion,
    FaithfulnessCorrelation,
    Infidelity,
    MetricResult,
    PointingGame,
    SensitivityN,
    Sparseness,
    aligned_saliency,
    scored_maps,
)
from interpkit.testing import check_metric

METRICS = {
    "faithfulness_correlation": lambda: FaithfulnessCorrelation(runs=6, subset_size=40),
    "sensitivity_n": lambda: SensitivityN(sizes=[1, 7, 50], runs=4),
    "infidelity": lambda: Infidelity(samples=3),
    "deletion": lambda: Deletion(steps=4),  # nothing to share: each map orders its own copies
}


def _maps(kind: str, seed: int, images: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind == "channels":  # one value per input element: the features are C x H x W
        return torch.randn(images.shape, generator=generator)
    return torch.rand(len(images), 1, *images.shape[2:], generator=generator)  # one per position


def _copies_counted(model):
    """A forward hook counting the copies the model runs, and its handle."""
    counted = [0]
    handle = model.register_forward_hook(lambda module, args, out: counted.__setitem__(0, counted[0] + len(args[0])))
    return counted, handle


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(sorted(METRICS)),
       explanations=st.lists(st.tuples(st.sampled_from(["channels", "positions"]), st.integers(0, 2),
                                        st.booleans()), min_size=1, max_size=4))
def test_each_result_equals_a_separate_call(name, explanations):
    """Whatever the mix of map widths and targets, every result is bit-identical to the metric
    called on that explanation alone."""
    torch.manual_seed(0)
    small_cnn = SmallCNN()
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    given = [(_maps(kind, seed, images), torch.tensor([0, 1, 2]) if flip else 1) for kind, seed, flip in explanations]
    metric = METRICS[name]()
    together = metric.score_each(small_cnn, images, given)
    for (maps, targets), result in zip(given, together):
        alone = metric(small_cnn, images, maps, targets)
        assert torch.equal(result.scores, alone.scores)
        assert (result.curves is None) == (alone.curves is None)
        if alone.curves is not None:
            assert torch.equal(result.curves, alone.curves)


@pytest.mark.parametrize("name", ["faithfulness_correlation", "sensitivity_n", "infidelity"])
def test_map_independent_forwards_run_once_per_width_and_targets(small_cnn, name):
    small_cnn.eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    metric = METRICS[name]()
    counted, handle = _copies_counted(small_cnn)
    try:
        metric(small_cnn, images, _maps("positions", 0, images), 1)
        one = counted[0]
        counted[0] = 0
        metric.score_each(small_cnn, images, [(_maps("positions", s, images), 1) for s in range(3)])
        assert counted[0] == one  # three maps, one set of forwards
        counted[0] = 0
        metric.score_each(small_cnn, images, [(_maps("positions", 0, images), 1), (_maps("positions", 1, images), 0),
                                              (_maps("positions", 2, images), torch.tensor([1, 1]))])
        assert counted[0] == 2 * one  # targets 1 and [1, 1] are the same targets
    finally:
        handle.remove()


def test_feature_widths_are_not_mixed_up(small_cnn):
    """Channel maps and position maps of the same inputs draw subsets of different features; a
    map-independent result computed for one width is never reused for the other."""
    small_cnn.eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    metric = METRICS["faithfulness_correlation"]()
    counted, handle = _copies_counted(small_cnn)
    try:
        metric(small_cnn, images, _maps("positions", 0, images), 0)
        one = counted[0]
        counted[0] = 0
        metric.score_each(small_cnn, images, [(_maps("positions", 0, images), 0), (_maps("channels", 0, images), 0)])
        assert counted[0] == 2 * one
    finally:
        handle.remove()


def test_explanations_and_their_own_targets_are_scored(small_cnn):
    small_cnn.eval()
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    explanations = [GradCAM(small_cnn)(images, target=t) for t in (0, 2)]
    metric = METRICS["faithfulness_correlation"]()
    together = metric.score_each(small_cnn, images, [(e, None) for e in explanations])
    for explanation, result in zip(explanations, together):
        assert torch.equal(result.scores, metric(small_cnn, images, explanation).scores)


def test_map_metrics_score_each_and_mask_metrics_ask_for_masks(small_cnn, images):
    maps = [_maps("positions", s, images) for s in range(2)]
    together = Sparseness().score_each(small_cnn, images, [(m, None) for m in maps])
    assert [torch.equal(r.scores, Sparseness()(small_cnn, images, m).scores) for r, m in zip(together, maps)] == [True] * 2
    with pytest.raises(InputError, match="masks="):
        PointingGame().score_each(small_cnn, images, [(maps[0], None)])


def test_a_bad_explanation_among_good_ones_is_named(small_cnn, images):
    good = _maps("positions", 0, images)
    with pytest.raises(InputError, match="do not align"):
        FaithfulnessCorrelation(runs=4).score_each(small_cnn, images, [(good, 0), (good[:, :, :8], 0)])
    with pytest.raises(InputError, match=r"target classes must lie in \[0, 5\)"):
        FaithfulnessCorrelation(runs=4).score_each(small_cnn, images, [(good, 0), (good, 99)])


def test_the_model_comes_back_as_it_was(small_cnn, images):
    state = {k: v.clone() for k, v in small_cnn.state_dict().items()}
    FaithfulnessCorrelation(runs=4).score_each(small_cnn, images, [(_maps("positions", s, images), 0) for s in range(2)])
    assert small_cnn.training and all(torch.equal(v, state[k]) for k, v in small_cnn.state_dict().items())


class NegatedDeletion(Deletion):
    """A plugin's metric that scores by its own __call__ (the maps negated first)."""

    name = "negated_deletion"

    def __call__(self, model, inputs, maps, targets=None):
        return super().__call__(model, inputs, -maps, targets)


class MeanMap:
    """A plugin's metric that is a plain callable, not a Metric."""

    name = "mean_map"
    higher_is_better = True

    def __call__(self, model, inputs, maps, targets=None):
        return MetricResult(self.name, aligned_saliency(maps, inputs).flatten(1).mean(1))


def test_a_metric_with_its_own_call_is_called_on_each(small_cnn, images):
    small_cnn.eval()
    given = [(_maps("positions", s, images), 1) for s in range(2)]
    together = NegatedDeletion(steps=4).score_each(small_cnn, images, given)
    for (maps, targets), result in zip(given, together):
        assert torch.equal(result.scores, NegatedDeletion(steps=4)(small_cnn, images, maps, targets).scores)


def test_evaluation_scores_plugin_metrics_as_calls_do(small_cnn, images):
    small_cnn.eval()
    scored = {"gradcam": scored_maps(GradCAM(small_cnn)(images), images),
              "saliency": scored_maps(Saliency(small_cnn)(images), images)}
    factories = {"gradcam": GradCAM, "saliency": Saliency}
    for metric in (MeanMap(), NegatedDeletion(steps=4)):
        results = score_explanations(metric, factories, small_cnn, images, scored)
        assert list(results) == ["gradcam", "saliency"]
        for method, (maps, targets) in scored.items():
            assert torch.equal(results[method].scores, metric(small_cnn, images, maps, targets).scores)


@pytest.mark.parametrize("bad", [5, None, "maps", {"a": 1}, torch.zeros(2, 2), [torch.zeros(4, 32, 32)],
                                 [(torch.zeros(4, 32, 32),)], [(torch.zeros(4, 32, 32), 0, 0)]],
                         ids=["int", "none", "str", "dict", "tensor", "bare maps", "one item", "three items"])
def test_explanations_that_are_not_pairs_are_refused(small_cnn, images, bad):
    for metric in (FaithfulnessCorrelation(runs=4), Sparseness(), NegatedDeletion()):
        with pytest.raises(InputError, match=r"\(maps, targets\) pair"):
            metric.score_each(small_cnn, images, bad)


def test_one_pair_not_in_a_list_is_refused_by_name(small_cnn, images):
    pair = (_maps("positions", 0, images), 0)
    with pytest.raises(InputError, match=r"explanations\[0\] must be a \(maps, targets\) pair.*Tensor"):
        FaithfulnessCorrelation(runs=4).score_each(small_cnn, images, pair)
    assert FaithfulnessCorrelation(runs=4).score_each(small_cnn, images, []) == []  # no explanations, no results


class SharesWhatDependsOnTheMaps(Deletion):
    """A broken plugin metric: it shares its whole result under one key, maps and all."""

    name = "shares_what_depends_on_the_maps"

    def compute(self, model, inputs, saliency, score):
        return score.shared("result", lambda: super(SharesWhatDependsOnTheMaps, self).compute(model, inputs, saliency, score))


def test_the_kit_fails_a_metric_whose_shared_work_reads_the_maps():
    with pytest.raises(AssertionError, match="score_each scored explanation 1 otherwise than a call"):
        check_metric(SharesWhatDependsOnTheMaps)
    check_metric(Deletion)


class OneChannelOnly(Deletion):
    """A correct plugin metric that takes one-channel maps only."""

    name = "one_channel_only"

    def prepare(self, maps, inputs):
        if torch.as_tensor(maps.maps[:, 0] if hasattr(maps, "maps") else maps).dim() == inputs.dim():
            raise InputError("one_channel_only scores (N, *grid) maps")
        return super().prepare(maps, inputs)


def test_the_kit_passes_plain_callables_and_metrics_of_one_map_kind():
    """A review found the kit's score_each check failing both with a raw error."""
    check_metric(MeanMap)
    check_metric(OneChannelOnly)
