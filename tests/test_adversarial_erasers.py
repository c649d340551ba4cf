"""Receler's erasers and AdvUnlearn's text encoder: what their edits hold, how they go onto a pipeline
and come off it again, what refuses them, and that attacks read the original model beside them."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from erasekit.attacks.base import ATTACKS, Attack, AttackContext, AttackTarget, Found
from erasekit.concepts import EraseSpec
from erasekit.edits import TEXT_ENCODER, Edit, pipeline_parameters
from erasekit.edits.erasers import erasers_on, new_erasers
from erasekit.edits.lora import NotLoraable, lora_factors
from erasekit.errors import ErasekitError
from erasekit.eval.generation import SamplerSettings
from erasekit.exports import export_edit
from erasekit.methods.receler import concept_mask, localisation_loss
from erasekit.methods.runner import erase
from erasekit.models.layers import cross_attentions
from erasekit.primitives.diffusion import predict_noise
from erasekit.primitives.prompt_cache import PromptCache

RECELER_QUICK = {"iterations": 3, "adversarial_steps": 1, "rank": 4, "sample_steps": 3}
ADVUNLEARN_QUICK = {"iterations": 3, "warmup_iterations": 1, "attack_steps": 2, "sample_steps": 3, "lr": 1e-3}


def images(pipe, prompt="a photo of a square"):
    return pipe([prompt], num_inference_steps=4, output_type="np", generator=torch.Generator().manual_seed(0)).images


@pytest.fixture(scope="module")
def receler_edit(pipe, tmp_path_factory):
    directory = tmp_path_factory.mktemp("receler") / "edit"
    erase(pipe, EraseSpec(("square",)), "receler", progress=False, **RECELER_QUICK).save(directory)
    return directory


@pytest.fixture(scope="module")
def advunlearn_edit(pipe, tmp_path_factory):
    directory = tmp_path_factory.mktemp("advunlearn") / "edit"
    edit = erase(pipe, EraseSpec(("square",), preserve=("circle",)), "advunlearn", progress=False, **ADVUNLEARN_QUICK)
    edit.save(directory)
    return directory


def test_a_fresh_eraser_changes_nothing_and_leaves_no_hook_behind(pipe):
    erasers = new_erasers(pipe.unet, 8, torch.Generator().manual_seed(0))
    assert set(erasers) == {layer.name for layer in cross_attentions(pipe.unet)}
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    states = PromptCache(pipe).states(["a photo of a square"])
    with torch.no_grad():
        before = predict_noise(pipe.unet, x, 500, states)
        with erasers_on(pipe.unet, erasers):
            during = predict_noise(pipe.unet, x, 500, states)
            erasers[next(iter(erasers))].up.bias.data.fill_(1.0)  # a trained eraser does change the output
            changed = predict_noise(pipe.unet, x, 500, states)
        after = predict_noise(pipe.unet, x, 500, states)
    assert torch.equal(before, during) and torch.equal(before, after) and not torch.allclose(before, changed)


def test_the_mask_is_where_the_concept_looks_and_only_outside_it_is_penalised():
    maps = torch.zeros(1, 2, 16, 5)  # (batch, heads, 4×4 pixels, tokens): token 1 looks at the top-left pixels
    maps[0, :, [0, 1, 4, 5], 1] = 0.9
    maps[0, :, :, 1] += 0.01
    mask = concept_mask([maps, torch.zeros(1, 2, 64, 5)], tokens=1, side=4, threshold=0.1)  # the 8×8 layer is not read
    assert mask.shape == (1, 1, 4, 4) and mask.flatten().nonzero().flatten().tolist() == [0, 1, 4, 5]
    inside = torch.zeros(1, 16, 3)
    inside[0, [0, 1, 4, 5]] = 5.0
    assert localisation_loss({"a": inside}, mask) == 0
    outside = torch.zeros(1, 16, 3)
    outside[0, 15] = 2.0
    assert localisation_loss({"a": outside}, mask) == pytest.approx(4.0 / 12)


def test_a_receler_edit_goes_on_and_comes_off_and_checks_its_base(pipe, receler_edit):
    edit = Edit.load(receler_edit)
    assert not edit.weights and edit.card["erasers"]["layers"] == len(cross_attentions(pipe.unet))
    plain = images(pipe)
    with edit.applied(pipe) as erased:
        assert erased is pipe
        erased_images = images(erased)
    assert not np.array_equal(plain, erased_images) and np.array_equal(plain, images(pipe))
    site = cross_attentions(pipe.unet)[0].name
    weight = dict(pipe.unet.named_parameters())[f"{site}.to_out.0.weight"]
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1e-3)  # another base model under the same architecture
        try:
            with pytest.raises(ErasekitError, match="different base model"):
                edit.check_base(pipe)
        finally:
            weight.copy_(original)  # not sub_(1e-3): in float32 that leaves the session's pipeline a few ulps off


def test_receler_edits_are_refused_where_no_format_carries_them(pipe, receler_edit, tmp_path):
    with pytest.raises(ErasekitError, match="adds eraser modules to the denoiser, which no kohya export carries"):
        export_edit(receler_edit, "kohya", tmp_path / "lora.safetensors")
    (receler_edit / "adapters.safetensors").rename(tmp_path / "kept.safetensors")
    try:
        with pytest.raises(ErasekitError, match=r"receler edit but has no adapters\.safetensors"):
            Edit.load(receler_edit)
    finally:
        (tmp_path / "kept.safetensors").rename(receler_edit / "adapters.safetensors")


def test_advunlearn_changes_the_text_encoder_alone_and_puts_it_back(pipe, advunlearn_edit):
    edit = Edit.load(advunlearn_edit)
    assert edit.weights and all(n.startswith(TEXT_ENCODER) for n in edit.weights) and not edit.unet_names
    assert not any("embeddings" in n or "pooler" in n for n in edit.weights)  # official text_encoder_full
    original = {n: p.detach().clone() for n, p in pipeline_parameters(pipe).items()}
    states = PromptCache(pipe).states(["a photo of a square"])
    with edit.applied(pipe) as erased:
        params = pipeline_parameters(erased)
        assert all(torch.equal(params[n], v) for n, v in edit.weights.items())
        assert not torch.allclose(PromptCache(erased).states(["a photo of a square"]), states)
    assert all(torch.equal(p, original[n]) for n, p in pipeline_parameters(pipe).items())
    with pytest.raises(NotLoraable, match="changes the text encoder, which a UNet LoRA does not carry"):
        lora_factors(edit, pipe.unet)


def test_a_text_encoder_edit_is_refused_where_its_encoder_would_be_lost(advunlearn_edit, tmp_path):
    out = tmp_path / "model.safetensors"
    with pytest.raises(ErasekitError, match="a single file holds only a CLIP one, not BertModel"):
        export_edit(advunlearn_edit, "single-file", out)  # the world's text encoder is BERT
    assert not out.exists()


@dataclass
class Recorded:
    """What a stand-in attack saw of the original model."""

    concept_latents: torch.Tensor | None = None
    original_states: torch.Tensor | None = None
    erased_states: torch.Tensor | None = None


@dataclass
class NoBudget:
    pass


def test_attacks_read_the_original_text_encoder_beside_an_erased_one(pipe, advunlearn_edit, tmp_path, monkeypatch):
    """The images of the concept an attack fits to, and P4D's and Ring-A-Bell's target states, come
    from the original model, whichever part of it the erasure changed."""
    from erasekit.eval.attack_run import run_attack, unedited
    from erasekit.judges.world import WorldJudge

    seen: list[Recorded] = []

    def search(context: AttackContext, targets: list[AttackTarget], config: NoBudget) -> list[Found]:
        target = targets[0]
        latents = context.concept_latents(target.prompt, [target.seed])
        seen.append(Recorded(latents, context.original_conditioning([target.prompt]), context.run.states([target.prompt])))
        prompt = context.tokenizer(target.prompt, padding="max_length", max_length=context.tokenizer.model_max_length,
                                   return_tensors="pt").input_ids  # fmt: skip
        return [Found(prompt, target.prompt, 0, length=len(context.tokenizer(target.prompt).input_ids))]

    monkeypatch.setitem(ATTACKS, "stand-in", Attack("stand-in", "records what it sees", NoBudget, search, True))
    target = [AttackTarget("a photo of a square", "square", "square", 7)]
    for k, edit in enumerate((unedited("square"), Edit.load(advunlearn_edit))):
        run_attack(pipe, edit, ATTACKS["stand-in"], NoBudget(), target, WorldJudge(), tmp_path / str(k), 1,
                   SamplerSettings(steps=3), progress=False, check_base=False)  # fmt: skip
    plain, adversarial = seen
    assert torch.equal(plain.concept_latents, adversarial.concept_latents)
    assert torch.equal(plain.original_states, adversarial.original_states)
    assert torch.equal(plain.erased_states, plain.original_states)
    assert not torch.allclose(adversarial.erased_states, adversarial.original_states)


def test_advunlearn_trains_the_official_layers_of_clip_and_bert(pipe):
    """text_encoder_full: every transformer layer and the final norm, never the embedding tables."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from erasekit.methods.advunlearn import text_encoder_layers

    clip = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4))
    names = text_encoder_layers(clip)
    assert {n.removeprefix("text_model.").split(".")[0] for n in names} == {"encoder", "final_layer_norm"}
    assert len(names) == len([n for n, _ in clip.named_parameters() if "embeddings" not in n])
    bert = text_encoder_layers(pipe.text_encoder)
    assert bert and all(n.startswith("encoder.layer.") for n in bert)
