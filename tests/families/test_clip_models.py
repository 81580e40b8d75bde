"""Whole CLIP models (open_clip's CLIP and CustomTextCLIP, Hugging Face's CLIPModel): adapters go
into the image tower, everything else stays frozen, and merge, unmerge and adapter files keep
image features, text features and zero-shot logits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import repadapter as ra
from repadapter_lab.benchmarks.support import nudge

TOL = 1e-5
VISION = {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16}
TEXT = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}


@dataclass(frozen=True)
class Kind:
    """How to build one kind of tiny CLIP model and read its three outputs."""

    build: Callable[[], nn.Module]
    tower: str  # the image tower's attribute
    projections: tuple[str, ...]  # the two projections into the joint embedding

    def outputs(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Image features, text features and zero-shot logits (image x text) on a fixed batch."""
        generator = torch.Generator().manual_seed(7)
        images = torch.randn(3, 3, 32, 32, generator=generator)
        text = torch.randint(0, 64, (4, 8), generator=generator)
        with torch.no_grad():
            if self.tower == "visual":  # open_clip
                image_features, text_features, logit_scale = model(images, text)[:3]
                logits = logit_scale * image_features @ text_features.T
            else:
                out = model(input_ids=text, pixel_values=images)
                image_features, text_features = out.image_embeds, out.text_embeds
                logits = out.logits_per_image
        return {"image": image_features, "text": text_features, "logits": logits}


def _open_clip(class_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import open_clip

        torch.manual_seed(0)
        return nudge(getattr(open_clip.model, class_name)(embed_dim=16, vision_cfg=VISION, text_cfg=TEXT))

    return build


def _hf_clip() -> nn.Module:
    import transformers

    tiny = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    text = {**tiny, "num_hidden_layers": 1, "vocab_size": 64, "max_position_embeddings": 8}
    text |= {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    config = transformers.CLIPConfig(
        text_config=text,
        vision_config={**tiny, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    return nudge(transformers.CLIPModel(config))


KINDS = {
    "open_clip CLIP": Kind(_open_clip("CLIP"), "visual", ("visual.proj", "text_projection")),
    "open_clip CustomTextCLIP": Kind(
        _open_clip("CustomTextCLIP"), "visual", ("visual.proj", "text.text_projection")
    ),
    "HF CLIPModel": Kind(_hf_clip, "vision_model", ("visual_projection.weight", "text_projection.weight")),
}


@pytest.fixture(params=list(KINDS))
def kind(request) -> Kind:
    pytest.importorskip("transformers" if request.param.startswith("HF") else "open_clip")
    return KINDS[request.param]


def _adapted(kind: Kind, config: ra.RepAdapterConfig | None = None) -> nn.Module:
    return ra.perturb_adapters(ra.inject(kind.build(), config), seed=3).eval()


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[key] - b[key]).abs().max().item() for key in a)


def test_only_the_image_towers_adapters_train(kind):
    model = ra.inject(kind.build(), ra.RepAdapterConfig(placement="block"))
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    adapters = {name for name, _ in model.named_parameters() if ".repadapter." in name}
    assert trained == adapters and len(adapters) == 2 * 2 * 4  # 2 layers x (attn, mlp) x 4 tensors
    assert all(name.startswith(f"{kind.tower}.") for name in adapters)
    assert not model.logit_scale.requires_grad
    assert ra.count_parameters(model).trainable == ra.count_parameters(model).adapter


def test_the_projections_train_when_asked(kind):
    model = ra.inject(kind.build(), ra.RepAdapterConfig(trainable=tuple(f"^{p}$" for p in kind.projections)))
    trained = {name for name, p in model.named_parameters() if p.requires_grad and ".repadapter." not in name}
    assert trained == set(kind.projections)


def test_merge_keeps_image_text_and_zero_shot_outputs(kind):
    base = kind.outputs(kind.build())
    model = _adapted(kind)
    unmerged = kind.outputs(model)
    merged_model = ra.merge(model)
    merged = kind.outputs(merged_model)
    assert _max_diff(merged, unmerged) <= TOL
    assert torch.equal(merged["text"], base["text"])  # the text tower is untouched
    assert (unmerged["logits"] - base["logits"]).abs().max() > 100 * TOL  # the adapters change the logits
    vanilla = kind.build()
    vanilla.load_state_dict(merged_model.state_dict(), strict=True)  # the plain architecture
    assert sum(p.numel() for p in merged_model.parameters()) == sum(p.numel() for p in vanilla.parameters())


def test_unmerge_restores_the_adapted_model_and_the_base_weights(kind, tmp_path):
    model = _adapted(kind)
    file = ra.save_adapter(model, tmp_path / "clip.safetensors")
    merged = ra.merge(model)
    restored = ra.unmerge(merged, file)
    assert _max_diff(kind.outputs(restored), kind.outputs(model)) <= TOL
    base = kind.build().state_dict()
    weights = {n: t for n, t in restored.state_dict().items() if ".repadapter." not in n}
    assert weights.keys() == base.keys()
    assert max((weights[n] - base[n]).abs().max().item() for n in base) <= 1e-6


def test_an_adapter_file_loads_onto_a_fresh_clip_model(kind, tmp_path):
    model = _adapted(kind, ra.RepAdapterConfig(placement="block", trainable=(f"^{kind.projections[0]}",)))
    with torch.no_grad():
        model.get_parameter(kind.projections[0]).mul_(1.5)  # "trained" projection, saved with the adapters
    file = ra.save_adapter(model, tmp_path / "clip.safetensors")
    loaded = ra.load_adapter(kind.build().eval(), file)
    assert _max_diff(kind.outputs(loaded), kind.outputs(model)) == 0
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_an_injected_image_tower_merges_with_its_clip_model(kind, tmp_path):
    """``inject(clip.visual)`` then ``merge(clip)``: the tower is merged; other whole-model calls
    name the submodule to call them on."""
    model = kind.build()
    ra.perturb_adapters(ra.inject(model.get_submodule(kind.tower)), seed=3)
    unmerged = kind.outputs(model)
    merged = ra.merge(model)
    assert not ra.has_adapters(merged) and ra.has_adapters(model)  # merged a copy
    assert _max_diff(kind.outputs(merged), unmerged) <= TOL
    with pytest.raises(ra.RepAdapterError, match=f"injected into its submodule '{kind.tower}'"):
        ra.save_adapter(model, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_a_tower_file_names_the_tower_when_given_the_whole_model(kind, tmp_path):
    tower = ra.perturb_adapters(ra.inject(kind.build().get_submodule(kind.tower)))
    file = ra.save_adapter(tower, tmp_path / "tower.safetensors")
    hint = f"fits this model's submodule '{kind.tower}': pass model.{kind.tower}"
    with pytest.raises(ra.RepAdapterError, match=hint):
        ra.load_adapter(kind.build(), file)
    with pytest.raises(ra.RepAdapterError, match=hint):
        ra.unmerge(kind.build(), file)


def test_an_open_clip_model_with_a_resnet_tower_is_refused_by_name():
    open_clip = pytest.importorskip("open_clip")
    vision = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64}
    model = open_clip.model.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=TEXT)
    with pytest.raises(ra.RepAdapterError, match="image tower \\(visual\\) of this CLIP is a ModifiedResNet"):
        ra.inject(model)
    assert all(p.requires_grad for p in model.parameters())  # refused before touching the model
