import pytest
import torch
import torchvision

import interpkit
from interpkit_transformers import AttentionRollout, attention_modules

timm = pytest.importorskip("timm", reason="timm is in interpkit's [test] extra")


def _timm_vit(fused: bool):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48, num_classes=4, depth=3).eval()
    for block in model.blocks:
        block.attn.fused_attn = fused
    return model


def _hand_rollout(probabilities):
    """The paper's rollout from attention weights (L of (N, heads, T, T)), written out plainly."""
    result = None
    for weights in probabilities:
        fused = weights.mean(dim=1)
        mixed = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1])
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    return result


def test_registered():
    assert "attention_rollout" in interpkit.list_explainers()


def test_equals_a_hand_written_rollout_of_the_models_own_attention_weights():
    model = _timm_vit(fused=False)  # eager: the softmax passes through attn_drop, where it is caught
    images = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    caught = []
    handles = [b.attn.attn_drop.register_forward_hook(lambda m, i, o: caught.append(o.detach())) for b in model.blocks]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    expected = _hand_rollout(caught)[:, 0, 1:].reshape(3, 1, 3, 3)
    ours = AttentionRollout(model, upsample=False)(images).maps
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    for n in range(3):  # every image of the batch gets its own map
        alone = AttentionRollout(model, upsample=False)(images[n:n + 1]).maps
        torch.testing.assert_close(alone[0], ours[n], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(ours[0], ours[1])


def test_fused_and_eager_attention_give_the_same_maps():
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    fused = AttentionRollout(_timm_vit(fused=True))(images, target=[0, 3]).maps
    eager = AttentionRollout(_timm_vit(fused=False))(images, target=[0, 3]).maps
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-7)
    assert fused.shape == (2, 1, 48, 48)


def test_torchvision_attention_is_recomputed_exactly():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=5).eval()
    images = torch.randn(3, 3, 32, 32)
    explainer = AttentionRollout(model, upsample=False)
    inputs = []
    handles = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for b in attention_modules(model)]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    for block, x in zip(attention_modules(model), inputs):
        _, weights = block(x, x, x, need_weights=True, average_attn_weights=True)
        torch.testing.assert_close(explainer.attention(block, x), weights, rtol=1e-5, atol=1e-6)
    maps = explainer(images, target="all").maps
    assert maps.shape == (3, 5, 4, 4) and torch.equal(maps[:, 0], maps[:, 4])  # the same map for every class


def test_huggingface_vit_from_a_config():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2,
                                    hidden_size=16, intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()  # sdpa: fused, no weights exposed
    config._attn_implementation = "eager"
    reference = transformers.ViTForImageClassification(config).eval()
    reference.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        eager = reference(pixel_values=images, output_attentions=True).attentions
    expected = _hand_rollout([a.detach() for a in eager])[:, 0, 1:].reshape(2, 1, 4, 4)
    ours = AttentionRollout(model, upsample=False)(images).maps
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


def test_bad_options_and_models_without_attention():
    model = _timm_vit(fused=True)
    for bad in ({"head_fusion": "median"}, {"discard_ratio": 1.0}, {"discard_ratio": -0.1}):
        with pytest.raises(interpkit.InputError):
            AttentionRollout(model, **bad)
    with pytest.raises(interpkit.LayerError, match="no attention module"):
        AttentionRollout(torchvision.models.resnet18())
    images = torch.randn(1, 3, 48, 48)
    kept = AttentionRollout(model, discard_ratio=0.5, upsample=False)(images).maps
    assert torch.isfinite(kept).all() and not torch.allclose(kept, AttentionRollout(model, upsample=False)(images).maps)


def test_conformance():
    from interpkit.testing import check_explainer

    check_explainer(AttentionRollout)  # token models explained, every other kind refused, models restored


def _hand_chefer(model, images, targets):
    """Chefer et al.'s rule from the eager model's own attention weights and their gradients."""
    caught = []

    def keep(module, args, output):
        output.retain_grad()
        caught.append(output)

    handles = [b.attn.attn_drop.register_forward_hook(keep) for b in model.blocks]
    logits = model(images)
    for handle in handles:
        handle.remove()
    logits[torch.arange(len(images)), targets].sum().backward()
    tokens = caught[0].shape[-1]
    relevance = torch.eye(tokens).expand(len(images), tokens, tokens)
    for attention in caught:
        fused = (attention.grad * attention).clamp_min(0).mean(dim=1)
        relevance = relevance + fused @ relevance
    return relevance[:, 0, 1:].detach()


def test_generic_attention_equals_the_rule_on_the_models_own_weights_and_keeps_its_outputs():
    from interpkit_transformers import GenericAttention

    model = _timm_vit(fused=False)
    images = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([0, 2, 3])
    expected = _hand_chefer(model, images, targets).reshape(3, 1, 3, 3)
    model.zero_grad(set_to_none=True)
    explanation = GenericAttention(model, upsample=False)(images, target=targets)
    torch.testing.assert_close(explanation.maps, expected, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # the eager recomputation leaves the model's scores as they were
        torch.testing.assert_close(explanation.scores[:, 0], model(images)[torch.arange(3), targets], rtol=1e-5,
                                   atol=1e-5)
    fused = GenericAttention(_timm_vit(fused=True), upsample=False)(images, target=targets).maps
    torch.testing.assert_close(fused, explanation.maps, rtol=1e-4, atol=1e-6)
    for n in range(3):
        alone = GenericAttention(model, upsample=False)(images[n:n + 1], target=targets[n:n + 1]).maps
        torch.testing.assert_close(alone[0], explanation.maps[n], rtol=1e-4, atol=1e-6)


def test_generic_attention_on_torchvision_and_huggingface_and_conformance():
    from interpkit.testing import check_explainer
    from interpkit_transformers import GenericAttention

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=5).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient at all
    images = torch.randn(2, 3, 32, 32)
    explanation = GenericAttention(vit, upsample=False)(images, target="all")
    assert explanation.maps.shape == (2, 5, 4, 4) and not torch.allclose(explanation.maps[:, 0], explanation.maps[:, 1])
    with torch.no_grad():
        torch.testing.assert_close(explanation.scores, vit(images), rtol=1e-5, atol=1e-5)
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2,
                                    hidden_size=16, intermediate_size=32, num_labels=3)
    hf = transformers.ViTForImageClassification(config).eval()
    hf_maps = GenericAttention(hf, upsample=False)(images, target=1)
    with torch.no_grad():
        torch.testing.assert_close(hf_maps.scores[:, 0], hf(pixel_values=images).logits[:, 1], rtol=1e-5, atol=1e-5)
    check_explainer(GenericAttention)


def test_a_vit_without_a_class_token_is_read_at_the_patch_mean():
    """timm's class_token=False, global_pool="avg": the output averages the patch tokens, so the
    map is the mean of their rows, not token 0's row (a patch)."""
    from interpkit_transformers import GenericAttention

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48, num_classes=4, depth=2,
                              class_token=False, global_pool="avg").eval()
    for block in model.blocks:
        block.attn.fused_attn = False
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    caught = []
    handles = [b.attn.attn_drop.register_forward_hook(lambda m, i, o: caught.append(o.detach())) for b in model.blocks]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    expected = _hand_rollout(caught).mean(dim=1).reshape(2, 1, 3, 3)
    torch.testing.assert_close(AttentionRollout(model, upsample=False)(images).maps, expected, rtol=1e-4, atol=1e-6)
    assert GenericAttention(model, upsample=False)(images, target=1).maps.shape == (2, 1, 3, 3)
    with pytest.raises(interpkit.LayerError, match="no class token"):
        AttentionRollout(model, readout="class_token")(images)
    pooled = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48, num_classes=4, depth=1,
                               class_token=False, global_pool="map").eval()
    with pytest.raises(interpkit.LayerError, match="global_pool='map'"):
        AttentionRollout(pooled)(images)


class _PaddedTokens(torch.nn.Module):
    """A class token and 16 patch tokens of which the last 6 are padding the attention ignores."""

    def __init__(self, float_mask: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.patches = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 8))
        self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 3)
        mask = torch.zeros(1, 17, dtype=torch.bool)
        mask[:, 11:] = True
        self.register_buffer("mask", mask.float().masked_fill(mask, float("-inf")) if float_mask else mask)

    def forward(self, x, need_weights=False):
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.patches(x).flatten(2).transpose(1, 2)], dim=1)
        out, weights = self.attention(tokens, tokens, tokens, key_padding_mask=self.mask.expand(len(x), -1),
                                      need_weights=need_weights, average_attn_weights=False)
        logits = self.head((tokens + out)[:, 0])
        return (logits, weights) if need_weights else logits


@pytest.mark.parametrize("float_mask", [False, True])
def test_a_key_padding_mask_is_applied_exactly(float_mask):
    from interpkit_transformers import GenericAttention

    model = _PaddedTokens(float_mask).eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, weights = model(images, need_weights=True)  # the module's own masked attention
    expected = _hand_rollout([weights])[:, 0, 1:].reshape(2, 1, 4, 4)
    layout = interpkit.TokenGrid(prefix=1)  # 17 tokens over 16 x 16 read also as 13 + 2 x 2 or 16 + 1 x 1
    with pytest.raises(interpkit.LayerError, match="can be read as prefix=1 with a 4x4 grid, prefix=13"):
        AttentionRollout(model)(images)
    ours = AttentionRollout(model, upsample=False, layout=layout)(images).maps
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert (ours.flatten(1)[:, 10:] == 0).all()  # the ignored tokens get nothing
    chefer = GenericAttention(model, upsample=False, layout=layout)(images, target=[0, 2])
    torch.testing.assert_close(chefer.scores[:, 0], logits[torch.arange(2), torch.tensor([0, 2])])
    assert (chefer.maps.flatten(1)[:, 10:] == 0).all()


def test_other_attention_masks_are_refused():
    from interpkit_transformers import GenericAttention

    class Causal(_PaddedTokens):
        def forward(self, x, need_weights=False):
            tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.patches(x).flatten(2).transpose(1, 2)], dim=1)
            causal = torch.triu(torch.ones(17, 17, dtype=torch.bool), 1)
            out, _ = self.attention(tokens, tokens, tokens, attn_mask=causal, need_weights=False)
            return self.head((tokens + out)[:, 0])

    images = torch.randn(1, 3, 16, 16)
    for cls in (AttentionRollout, GenericAttention):
        with pytest.raises(interpkit.LayerError, match="attn_mask"):
            cls(Causal().eval())(images)


def test_generic_attention_refuses_a_block_it_cannot_recompute_exactly():
    from interpkit_transformers import GenericAttention

    class Tempered(torch.nn.MultiheadAttention):  # looks like nn.MultiheadAttention, scales its output
        def forward(self, *args, **kwargs):
            out, weights = super().forward(*args, **kwargs)
            return out * 1.5, weights

    model = _PaddedTokens().eval()
    tempered = Tempered(8, 2, batch_first=True)
    tempered.load_state_dict(model.attention.state_dict())
    model.attention = tempered
    with pytest.raises(interpkit.LayerError, match="differs from the model's"):
        GenericAttention(model)(torch.randn(1, 3, 16, 16))


def test_register_tokens_are_read_as_the_model_states_them():
    """17 tokens over 48 x 48 are a class token and 4 x 4 patches, or 8 prefix tokens (class and
    7 registers) and 3 x 3: timm says which; a bare TokenGrid() on an unknown model refuses."""
    from interpkit import GradCAM, TokenGrid
    from interpkit.core import token_layout

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48, depth=2, num_classes=5,
                              reg_tokens=7).eval()
    assert token_layout(model) == TokenGrid(prefix=8)
    images = torch.randn(2, 3, 48, 48)
    chosen = GradCAM(model, upsample=False)(images, target=1)
    explicit = GradCAM(model, layer=(chosen.layer, TokenGrid(prefix=8, grid_size=(3, 3))), upsample=False)(images, 1)
    torch.testing.assert_close(chosen.maps, explicit.maps)
    auto = GradCAM(model, layer=(chosen.layer, TokenGrid()), upsample=False)(images, target=1)
    torch.testing.assert_close(auto.maps, explicit.maps)
    assert AttentionRollout(model, upsample=False)(images).maps.shape == (2, 1, 3, 3)
    with pytest.raises(interpkit.LayerError, match="prefix=1 with a 4x4 grid, prefix=8 with a 3x3 grid"):
        TokenGrid().resolve(17, (48, 48))


@pytest.mark.parametrize("variant", ["cross", "bias_kv", "zero_attn"])
def test_attention_that_is_not_over_the_tokens_alone_is_refused(variant):
    from interpkit_transformers import GenericAttention

    class Variant(_PaddedTokens):
        def __init__(self):
            super().__init__()
            self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=variant == "bias_kv",
                                                         add_zero_attn=variant == "zero_attn")

        def forward(self, x, need_weights=False):
            tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.patches(x).flatten(2).transpose(1, 2)], dim=1)
            memory = tokens.flip(1) if variant == "cross" else tokens
            out, _ = self.attention(tokens, memory, memory, need_weights=False)
            return self.head((tokens + out)[:, 0])

    layout = interpkit.TokenGrid(prefix=1)
    for cls in (AttentionRollout, GenericAttention):
        with pytest.raises(interpkit.LayerError, match="cross-attention" if variant == "cross" else "bias_kv"):
            cls(Variant().eval(), layout=layout)(torch.randn(1, 3, 16, 16))


def _small_torchvision_vit(classes=6):
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=classes).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient at all
    return vit


def test_legrad_equals_torchcam_given_its_readout_and_reads_the_class_token_itself():
    from torchcam.methods import LeGrad as TheirLeGrad

    from interpkit_transformers import LeGrad

    vit = _small_torchvision_vit()
    images = torch.randn(2, 3, 32, 32)

    def torchcams_readout(tokens):  # torchcam 0.5 averages every token, the class token too
        return vit.heads(vit.encoder.ln(tokens.mean(dim=1)))

    for layers, blocks, target in [(None, list(vit.encoder.layers), 3), (2, list(vit.encoder.layers)[-2:], [3, 5])]:
        mine = LeGrad(vit, layers=layers, upsample=False, score_projection=torchcams_readout)(images, target=target)
        with TheirLeGrad(vit, blocks) as extractor:
            theirs = extractor(target, vit(images), normalized=False)[0]
        torch.testing.assert_close(mine.maps[:, 0], theirs, rtol=1e-5, atol=1e-7)
    own = LeGrad(vit, upsample=False)(images, target=3).maps[:, 0]
    assert (own - theirs).abs().max() > 0.05 * theirs.abs().max()
    kept = []
    handle = vit.encoder.layers[-1].register_forward_hook(lambda m, i, o: kept.append(o))
    with torch.no_grad():
        logits = vit(images)
    handle.remove()
    readout = vit.heads(vit.encoder.ln(kept[0])[:, 0])  # the model's readout: LeGrad's default
    torch.testing.assert_close(readout, logits)
    assert (torchcams_readout(kept[0]) - logits).abs().max() > 1e-2


def test_legrad_on_timm_and_huggingface_and_by_hand():
    from interpkit_transformers import LeGrad

    model = _timm_vit(fused=True)
    images = torch.randn(2, 3, 48, 48)
    maps = LeGrad(model, upsample=False)(images, target=torch.tensor([[0, 1], [2, 3]])).maps
    assert maps.shape == (2, 2, 3, 3) and (maps >= 0).all()
    # by hand: each block's attention weights from the eager path, its score through timm's own head
    for block in model.blocks:
        block.attn.fused_attn = False
    weights, tokens = [], []
    handles = [b.attn.attn_drop.register_forward_hook(lambda m, i, o: weights.append(o)) for b in model.blocks]
    handles += [b.register_forward_hook(lambda m, i, o: tokens.append(o)) for b in model.blocks]
    model(images)
    for handle in handles:
        handle.remove()
    expected = 0
    for attention, out in zip(weights, tokens):
        scores = model.forward_head(model.norm(out))
        (gradient,) = torch.autograd.grad(scores[0, 1] + scores[1, 3], attention, retain_graph=True)
        expected = expected + gradient.clamp_min(0).mean(dim=(1, 2))[:, 1:].reshape(2, 3, 3) / 3
    torch.testing.assert_close(maps[:, 1], expected, rtol=1e-4, atol=1e-8)
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2,
                                    hidden_size=16, intermediate_size=32, num_labels=3)
    hf = transformers.ViTForImageClassification(config).eval()
    assert LeGrad(hf, layers=[-1])(torch.randn(1, 3, 32, 32), target=2).maps.shape == (1, 1, 32, 32)


def test_legrad_refusals_and_conformance():
    from interpkit.testing import check_explainer
    from interpkit.testing.models import TinyTokens
    from interpkit_transformers import LeGrad

    vit = _small_torchvision_vit()
    for bad in ({"layers": 0}, {"layers": 4}, {"layers": [3]}, {"layers": []}, {"score_projection": 3}):
        with pytest.raises(interpkit.InputError):
            LeGrad(vit, **bad)
    with pytest.raises(interpkit.TargetError, match="class"):
        LeGrad(vit)(torch.randn(1, 3, 32, 32), target=lambda out: out[:, 0])
    class Inline(TinyTokens):  # the block's residual additions written in forward: no module outputs them
        def forward(self, x):
            tokens = self.patches(x).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
            block = self.blocks[0]
            normed = block.norm1(tokens)
            tokens = tokens + block.attention(normed, normed, normed, need_weights=False)[0]
            return self.head(self.norm(tokens + block.mlp(block.norm2(tokens)))[:, 0])

    with pytest.raises(interpkit.LayerError, match="not called"):
        LeGrad(Inline().eval())(torch.randn(1, 3, 8, 8))
    with pytest.raises(interpkit.LayerError, match="score_projection"):
        LeGrad(torchvision.models.VisionTransformer(32, 8, 1, 2, 16, 32).encoder)

    class TinyViT(torchvision.models.VisionTransformer):
        input_kind = "tokens"

        def __init__(self):
            super().__init__(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
                             num_classes=4)
            torch.nn.init.normal_(self.heads.head.weight)

        def example_inputs(self, batch, generator):
            return torch.randn(batch, 3, 16, 16, generator=generator)

    check_explainer(LeGrad, models={"TinyViT": TinyViT().train()})


def test_legrad_reads_a_one_block_vit_at_its_block():
    from torchcam.methods import LeGrad as TheirLeGrad

    from interpkit_transformers import LeGrad

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                                               mlp_dim=32, num_classes=5).eval()
    torch.nn.init.normal_(vit.heads.head.weight)
    torch.nn.init.normal_(vit.encoder.ln.weight)  # a final norm that is not the identity
    images = torch.randn(2, 3, 32, 32)
    own = LeGrad(vit, upsample=False)(images, target=1).maps  # the readout check passes: the block is read
    assert own.shape == (2, 1, 4, 4)

    def torchcams_readout(tokens):
        return vit.heads(vit.encoder.ln(tokens.mean(dim=1)))

    mine = LeGrad(vit, upsample=False, score_projection=torchcams_readout)(images, target=1).maps[:, 0]
    with TheirLeGrad(vit, list(vit.encoder.layers)) as extractor:
        theirs = extractor(1, vit(images), normalized=False)[0]
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=1, num_attention_heads=2,
                                    hidden_size=16, intermediate_size=32, num_labels=3)
    assert LeGrad(transformers.ViTForImageClassification(config).eval())(images, target=2).maps.shape == (2, 1, 32, 32)


def test_legrad_refuses_a_readout_that_gives_no_logits():
    from interpkit_transformers import LeGrad

    vit = _small_torchvision_vit()
    images = torch.randn(1, 3, 32, 32)
    for readout in (lambda t: t[:, 0, 0], lambda t: t[:, 0, :2], lambda t: t[:, 0].detach()):
        with pytest.raises(interpkit.InputError, match="score_projection"):
            LeGrad(vit, score_projection=readout)(images, target=3)
    with pytest.raises(interpkit.InputError):
        LeGrad(vit, layers=[True])


class _PooledTokens(torch.nn.Module):
    """Two attention blocks, the second over half as many tokens (pooled in between)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patches = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.first = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.second = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.patches(x).flatten(2).transpose(1, 2)  # (N, 16, 8)
        tokens = tokens + self.first(tokens, tokens, tokens, need_weights=False)[0]
        tokens = tokens.reshape(len(x), 8, 2, 8).mean(2)
        tokens = tokens + self.second(tokens, tokens, tokens, need_weights=False)[0]
        return self.head(tokens.mean(1))


def test_attention_over_other_token_sequences_than_one_per_sample_is_refused():
    """MobileViT attends within patches (four sequences per image, of 1, 4 and 16 tokens at 64 px);
    a pooling model changes the number of tokens between blocks: rollout's product of the
    blocks' maps is not defined for either (it raised torch's raw size error)."""
    from interpkit_transformers import GenericAttention

    mobilevit = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=3).eval()
    pooled = _PooledTokens().eval()
    for model, size, found in ((mobilevit, 64, "8 sequences of 1 tokens, 8 sequences of 4 tokens"),
                               (pooled, 16, "2 sequences of 8 tokens, 2 sequences of 16 tokens")):
        for cls in (AttentionRollout, GenericAttention):
            with pytest.raises(interpkit.LayerError, match=f"{found}.* for 2 samples"):
                cls(model, layout=interpkit.TokenGrid(prefix=0), readout="mean")(torch.randn(2, 3, size, size), target=1)


def test_attention_these_methods_do_not_recompute_is_refused_not_misread():
    """timm's windowed (Swin), class (CaiT) and relative-position (BEiT) attention raised a raw
    AttributeError; EVA's rotary embeddings and a position bias added inside an attention that
    looks like timm's gave rollout maps of attention the model never computed, without a word."""
    from timm.models.vision_transformer import Attention

    from interpkit_transformers import GenericAttention

    for name, options in (("swin_tiny_patch4_window7_224", {"img_size": 56, "depths": (1, 1), "num_heads": (1, 2)}),
                          ("cait_xxs24_224", {"img_size": 32, "depth": 1}), ("beit_base_patch16_224", {"img_size": 32,
                                                                                   "depth": 1})):
        model = timm.create_model(name, pretrained=False, num_classes=3, **options).eval()
        for cls in (AttentionRollout, GenericAttention):
            with pytest.raises(interpkit.LayerError, match="computes its weights otherwise"):
                cls(model)
    eva = timm.create_model("eva02_tiny_patch14_224", pretrained=False, img_size=28, depth=2, num_classes=3).eval()
    for cls in (AttentionRollout, GenericAttention):
        with pytest.raises(interpkit.LayerError, match="given rope"):
            cls(eva)(torch.randn(1, 3, 28, 28), target=0)

    class BiasedAttention(Attention):  # a learned bias on the scores, inside a forward of its own
        def forward(self, x, attn_mask=None, is_causal=False):
            n, t, c = x.shape
            q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            scores = (self.q_norm(q) * self.scale) @ self.k_norm(k).transpose(-2, -1) + torch.linspace(0, 3, t)
            return self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, c))

    biased = _timm_vit(fused=False)
    for block in biased.blocks:
        plain = block.attn
        block.attn = BiasedAttention(192, num_heads=3, qkv_bias=True)
        block.attn.load_state_dict(plain.state_dict())
    for cls in (AttentionRollout, GenericAttention):
        for _ in range(2):  # refused on every call, not only the first of its shape
            with pytest.raises(interpkit.LayerError, match="differs from the model's"):
                cls(biased)(torch.randn(1, 3, 48, 48), target=0)


def test_attention_that_never_runs_is_refused():
    class Unused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)  # defined, never called
            self.patches, self.head = torch.nn.Conv2d(3, 8, 4, 4), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.patches(x).mean((2, 3)))

    from interpkit_transformers import GenericAttention

    for cls in (AttentionRollout, GenericAttention):
        with pytest.raises(interpkit.LayerError, match="none of the model's attention blocks ran"):
            cls(Unused().eval(), layout=interpkit.TokenGrid(prefix=0), readout="mean")(torch.randn(2, 3, 16, 16), 0)


def _weights_in_order(model, images):
    """The attention weights (N, heads, T, T) of every call of every timm block, in the order the
    calls run (eager attention: the softmax passes through attn_drop, where it is caught)."""
    caught = []
    blocks = {id(m): m for m in model.modules() if hasattr(m, "attn_drop") and hasattr(m, "qkv")}
    for block in blocks.values():
        block.fused_attn = False
    handles = [b.attn_drop.register_forward_hook(lambda m, i, o: caught.append(o.detach())) for b in blocks.values()]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return caught


def _discarded(probabilities, ratio):
    """Each head-averaged map with its lowest ``ratio`` of weights zeroed, no column spared."""
    fused = []
    for weights in probabilities:
        flat = weights.mean(dim=1).flatten(1).clone()
        flat.scatter_(1, flat.topk(int(flat.shape[1] * ratio), dim=1, largest=False).indices, 0.0)
        fused.append(flat.view(*weights.shape[:1], 1, *weights.shape[2:]))  # one "head": the mean is itself
    return fused


def test_discarding_without_a_class_token_spares_no_patch():
    """The class token's column is spared from discarding; a model without one spares nothing
    (token 0 is then the top-left patch, which sparing made the hottest)."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=4, depth=3,
                              class_token=False, global_pool="avg").eval()
    images = torch.randn(2, 3, 64, 64)
    expected = _hand_rollout(_discarded(_weights_in_order(model, images), 0.9)).mean(dim=1).reshape(2, 1, 4, 4)
    ours = AttentionRollout(model, discard_ratio=0.9, upsample=False)(images).maps
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


class _Reversed(torch.nn.Sequential):
    def forward(self, x):
        for block in reversed(self):
            x = block(x)
        return x


@pytest.mark.parametrize("arrangement", ["shared", "reversed"])
def test_blocks_are_rolled_out_in_the_order_and_number_of_times_they_run(arrangement):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48, num_classes=4, depth=3).eval()
    blocks = list(model.blocks)
    model.blocks = torch.nn.Sequential(*[blocks[0]] * 3) if arrangement == "shared" else _Reversed(*blocks)
    images = torch.randn(2, 3, 48, 48)
    caught = _weights_in_order(model, images)
    assert len(caught) == 3
    expected = _hand_rollout(caught)[:, 0, 1:].reshape(2, 1, 3, 3)
    torch.testing.assert_close(AttentionRollout(model, upsample=False)(images).maps, expected, rtol=1e-4, atol=1e-6)
    if arrangement == "shared":
        with pytest.raises(interpkit.LayerError, match="ran 3 times"):
            interpkit.get_explainer("legrad")(model)(images, target=1)


@pytest.mark.parametrize("variant", ["pool_include_prefix", "distilled"])
def test_auto_readout_follows_how_timm_pools_its_tokens(variant):
    torch.manual_seed(0)
    if variant == "distilled":  # the two heads on tokens 0 and 1 averaged
        model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=48, num_classes=4,
                                  depth=2).eval()
        read, prefix = (lambda flows: flows[:, :2].mean(dim=1)), 2
    else:  # every token averaged, the register tokens too
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48, num_classes=4, depth=2,
                                  class_token=False, reg_tokens=4, global_pool="avg", pool_include_prefix=True).eval()
        read, prefix = (lambda flows: flows.mean(dim=1)), 4
    images = torch.randn(2, 3, 48, 48)
    expected = read(_hand_rollout(_weights_in_order(model, images)))[:, prefix:].reshape(2, 1, 3, 3)
    torch.testing.assert_close(AttentionRollout(model, upsample=False)(images).maps, expected, rtol=1e-4, atol=1e-6)


def test_auto_readout_follows_huggingface_pooling():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    beit = transformers.BeitForImageClassification(transformers.BeitConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
        intermediate_size=64, num_labels=3, use_mean_pooling=True, use_absolute_position_embeddings=True,
        use_relative_position_bias=False, use_shared_relative_position_bias=False)).eval()
    images = torch.randn(2, 3, 32, 32)
    auto = AttentionRollout(beit, upsample=False)(images).maps
    torch.testing.assert_close(auto, AttentionRollout(beit, upsample=False, readout="mean")(images).maps)
    assert not torch.allclose(auto, AttentionRollout(beit, upsample=False, readout="class_token")(images).maps)
    dinov2 = transformers.Dinov2ForImageClassification(transformers.Dinov2Config(
        image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=32, num_attention_heads=2, num_labels=3)).eval()
    with pytest.raises(interpkit.LayerError, match="side by side"):
        AttentionRollout(dinov2)(images)
    assert AttentionRollout(dinov2, readout="class_token")(images).maps.shape == (2, 1, 32, 32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_half_and_double_precision_vits_are_explained(dtype):
    """16-bit blocks are compared with their recomputation at 16-bit rounding, not refused."""
    model = _timm_vit(fused=True)
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    for name in ("attention_rollout", "generic_attention"):
        cls = interpkit.get_explainer(name)
        wide = cls(model, upsample=False)(images, target=1).maps
        narrow = cls(model.to(dtype), upsample=False)(images.to(dtype), target=1).maps
        model.float()
        tolerance = 1e-6 if dtype == torch.float64 else 0.05
        torch.testing.assert_close(narrow, wide, rtol=tolerance, atol=tolerance * float(wide.abs().max()))


def test_eva_attention_with_separate_query_and_value_biases():
    from timm.models.eva import Eva

    torch.manual_seed(0)
    model = Eva(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3,
                use_rot_pos_emb=False, global_pool="token").eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.q_bias.normal_()
            block.attn.v_bias.normal_()
    images = torch.randn(2, 3, 32, 32)
    expected = _hand_rollout(_weights_in_order(model, images))[:, 0, 1:].reshape(2, 1, 4, 4)
    torch.testing.assert_close(AttentionRollout(model, upsample=False)(images).maps, expected, rtol=1e-4, atol=1e-6)
    assert interpkit.get_explainer("generic_attention")(model)(images, target=1).maps.shape == (2, 1, 32, 32)


def test_a_layout_that_is_no_token_grid_is_refused():
    with pytest.raises(interpkit.InputError, match="TokenGrid"):
        AttentionRollout(_timm_vit(fused=True), layout="x")
