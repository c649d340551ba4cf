"""MACE and RealEra on the embedded model: stages, artifacts, restoration and bad input."""

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods import mace, realera
from erasekit.methods.mace import MACEConfig, co_existing_pairs
from erasekit.methods.realera import RealEraConfig, sample_perturbations
from erasekit.methods.runner import erase
from erasekit.models.layers import kv_projections
from erasekit.primitives.prompt_cache import PromptCache
from erasekit.primitives.run import RunContext

QUICK_MACE = dict(images_per_concept=2, steps=3, sample_steps=4, lr=1e-2, lam=10.0)


def unet_state(pipe):
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def same_state(pipe, before):
    after = pipe.unet.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_refinement_maps_co_existing_words_and_leaves_the_concept_token(pipe):
    cache = PromptCache(pipe)
    src, tgt = co_existing_pairs(cache, "a photo of square", "a photo of ground")
    full = cache.states(["a photo of square"])[0]
    assert len(src) == len(tgt) == cache.max_length - 1  # every position but the concept's one token
    square = full[cache.word_span("a photo of square", "square").start]
    assert not any(torch.equal(row, square) for row in src)
    config = MACEConfig(lora=False, lam=1.0, templates=("a photo of {}",))
    edit = erase(pipe, EraseSpec(("square",), ("ground",)), "mace", progress=False, **vars(config))
    name = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"
    w0 = kv_projections(pipe.unet)[name].weight
    moved = (src @ edit.weights[f"{name}.weight"].T - tgt @ w0.T).norm() / (src @ w0.T - tgt @ w0.T).norm()
    assert moved < 0.5  # the co-existing words now answer like the anchor prompt's


def test_mace_trains_one_lora_per_concept_fuses_them_and_restores_the_pipeline(pipe):
    before = unet_state(pipe)
    spec = EraseSpec(("square", "heart"), preserve=("circle",))
    fused = erase(pipe, spec, "mace", progress=False, **QUICK_MACE)
    refined = erase(pipe, spec, "mace", progress=False, **{**QUICK_MACE, "lora": False})
    summed = erase(pipe, spec, "mace", progress=False, **{**QUICK_MACE, "fusion": "sum"})
    assert same_state(pipe, before)
    assert set(fused.weights) == {f"{n}.weight" for n in kv_projections(pipe.unet)}
    key = next(iter(fused.weights))
    assert not torch.allclose(fused.weights[key], refined.weights[key])
    assert not torch.allclose(fused.weights[key], summed.weights[key])
    again = erase(pipe, spec, "mace", progress=False, **QUICK_MACE)
    assert all(torch.equal(again.weights[k], fused.weights[k]) for k in fused.weights)  # seeded


def test_mace_refuses_a_concept_without_foreground(pipe, monkeypatch):
    before = unet_state(pipe)
    monkeypatch.setattr(
        mace, "make_segmenter", lambda name, device=None, **options: lambda images, concept: torch.zeros(len(images), 1, 64, 64)
    )
    with pytest.raises(ErasekitError, match="no foreground"):
        erase(pipe, EraseSpec(("square",)), "mace", progress=False, **QUICK_MACE)
    assert same_state(pipe, before)


def test_an_interrupted_mace_run_restores_the_pipeline(pipe, monkeypatch):
    before = unet_state(pipe)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mace, "train_concept_lora", interrupt)
    with pytest.raises(KeyboardInterrupt):
        erase(pipe, EraseSpec(("square",)), "mace", progress=False, **QUICK_MACE)
    assert same_state(pipe, before)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(lam=0), "λ"),
        (dict(rank=0), "rank"),
        (dict(segmenter="sam"), "segmenter"),
        (dict(fusion="mean"), "fusion"),
        (dict(templates=("no slot",)), "template"),
        (dict(prior_prompts="/nonexistent.txt"), "does not exist"),
    ],
)
def test_mace_config_errors(settings, message):
    with pytest.raises(ErasekitError, match=message):
        MACEConfig(**settings)


def test_mace_rank_larger_than_the_layer(pipe):
    with pytest.raises(ErasekitError, match="does not fit"):
        erase(pipe, EraseSpec(("square",)), "mace", progress=False, **{**QUICK_MACE, "rank": 10_000})


def test_perturbations_lie_in_the_neighbourhood_the_paper_defines():
    e = torch.randn(384, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.4
    rng = torch.Generator().manual_seed(1)
    near = sample_perturbations(e, 50, 0.0, 1.0, lambda c: 0.6 <= c <= 0.95, rng)
    cos = torch.nn.functional.cosine_similarity(e[None], e[None] + near, dim=-1)
    assert near.shape == (50, 384) and (near.norm(dim=-1) < e.norm()).all() and ((cos >= 0.6) & (cos <= 0.95)).all()
    far = sample_perturbations(e, 20, 1.0, 2.0, lambda c: c < 0.6, rng)
    assert ((far.norm(dim=-1) >= e.norm() * 0.999) & (far.norm(dim=-1) < 2 * e.norm())).all()
    with pytest.raises(ErasekitError, match="widen"):
        sample_perturbations(e, 5, 0.0, 0.01, lambda c: c < 0.5, rng)  # tiny radius: cos stays near 1


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(s1=0.5, s2=0.9), "S₂ ≤ S₁"),
        (dict(d1=0.0), "D₁"),
        (dict(d2=0.5), "D₂"),
        (dict(lam1=0), "λ₁"),
        (dict(span="x"), "span"),
        (dict(outside_preserve=1.0), "outside_preserve"),
    ],
)
def test_realera_config_errors(settings, message):
    with pytest.raises(ErasekitError, match=message):
        RealEraConfig(**settings)


def test_realera_closed_form_and_alignment(pipe):
    before = unet_state(pipe)
    spec = EraseSpec(("square",), preserve=("circle", "heart"))
    closed = erase(pipe, spec, "realera", progress=False, lora=False, m=4, n=2)
    aligned = erase(pipe, spec, "realera", progress=False, m=4, n=2, epochs=4, lr=1e-3, sample_steps=4)
    assert same_state(pipe, before)
    key = next(iter(closed.weights))
    assert not torch.allclose(closed.weights[key], aligned.weights[key])
    cache = PromptCache(pipe)
    assert realera.token_span(cache, RealEraConfig()) == "all"  # the embedded encoder is bidirectional
    plain = erase(pipe, spec, "realera", progress=False, lora=False, m=0, n=0)
    assert not torch.allclose(closed.weights[key], plain.weights[key])  # the mined neighbours count


def test_realera_mines_outside_the_preserve_prompts_directions(pipe):
    run = RunContext(pipe)
    spec = EraseSpec(("square",), preserve=("circle", "heart"))
    config = RealEraConfig(m=16, outside_preserve=0.01, lora=False)
    projector = realera.preserve_complement(run, spec, config)
    assert torch.allclose(projector @ projector, projector, atol=1e-9)  # a projector
    kept = realera.preserve_states(run.cache, spec, config).double().reshape(-1, 384)
    assert (kept @ projector).norm() < 0.06 * kept.norm()  # the preserve states barely reach its subspace
    hood = realera.mine(run, "a photo of a square", "square", "a photo of a ", "", config, run.generator(0), projector)
    etas = hood.associated[:, hood.positions[0]] - hood.prompt[hood.positions[0]]
    assert torch.allclose(etas @ projector, etas, atol=1e-9)  # every neighbour moves inside it
    assert realera.preserve_complement(run, EraseSpec(("square",)), config) is None  # nothing to keep clear of

    anywhere, outside = (
        erase(pipe, spec, "realera", progress=False, **{**vars(config), "outside_preserve": tau}) for tau in (0, 0.01)
    )
    assert outside.card["config"]["outside_preserve"] == 0.01
    assert not any(torch.allclose(anywhere.weights[k], outside.weights[k]) for k in outside.weights)


def test_realera_setting_that_admits_no_samples(pipe):
    with pytest.raises(ErasekitError, match="perturbations met the bounds"):
        erase(pipe, EraseSpec(("square",)), "realera", progress=False, lora=False, s1=0.9999, s2=0.9998, d1=2.0, d2=3.0)


def test_rece_adversarial_embedding_inverts_a_closed_form_edit():
    from erasekit.methods.rece import adversarial_states

    torch.manual_seed(0)
    originals = [torch.randn(8, 6) for _ in range(3)]
    text_map = torch.eye(6) + 0.3 * torch.randn(6, 6)  # an invertible closed-form edit W = W₀ M
    edited = [w @ text_map for w in originals]
    c = torch.randn(4, 6)
    adv = adversarial_states(c, edited, originals, reg=1e-9)
    for w, w0 in zip(edited, originals, strict=True):
        assert torch.allclose(adv.float() @ w.T, c @ w0.T, atol=1e-4)  # the edited model answers c′ as the original did c


def test_rece_erases_epoch_by_epoch_and_keeps_the_validated_epoch(pipe):
    before = unet_state(pipe)
    spec = EraseSpec(("square",), preserve=("circle",))
    last = erase(pipe, spec, "rece", progress=False, validate="none", epochs=2)
    start = erase(pipe, spec, "uce", progress=False)
    key = next(iter(last.weights))
    assert not torch.allclose(last.weights[key], start.weights[key]) and last.card["best_epoch"] == 2
    checked = erase(pipe, spec, "rece", progress=False, epochs=1, validation_samples=2, sample_steps=4)
    assert len(checked.card["validation_scores"]) == 2 and checked.card["best_epoch"] in (0, 1)
    assert same_state(pipe, before)
    with pytest.raises(ErasekitError, match="no label"):
        erase(pipe, EraseSpec(("a blue thing",)), "rece", progress=False, epochs=1)


def test_rece_validates_flames_with_the_evaluators_flames_head(pipe):
    from erasekit.methods.rece import RECEConfig, make_validator
    from erasekit.primitives.run import RunContext

    config = RECEConfig(validation_samples=1, sample_steps=2)
    validator = make_validator(RunContext(pipe), EraseSpec(("in flames",), preserve=("square",)), config)
    assert validator.judge.name == "world"  # 'auto' on the embedded model
    with pytest.raises(ErasekitError, match="no label 'banana'"):
        make_validator(RunContext(pipe), EraseSpec(("banana",)), config)


def test_concept_expansion_adds_nearest_phrases_and_records_them(pipe):
    from erasekit.primitives.expansion import expand_concepts

    cache = PromptCache(pipe)
    vocabulary = ["fire", "flame", "burning", "banana", "keyboard", "square flames", "circle"]
    found = expand_concepts(cache, ("flames",), vocabulary, top_k=3, exclude=("circle",))["flames"]
    phrases = [c.phrase for c in found]
    assert phrases[0] in ("flame", "fire", "burning") and "banana" not in phrases and "circle" not in phrases
    assert "square flames" not in phrases and [c.similarity for c in found] == sorted((c.similarity for c in found), reverse=True)
    edit = erase(pipe, EraseSpec(("square",)), "uce", progress=False, expand=2, expand_min_similarity=0.0)
    assert len(edit.card["targets"]) == 3 and list(edit.card["expanded"]) == ["square"]
    with pytest.raises(ErasekitError, match="top_k"):
        expand_concepts(cache, ("flames",), vocabulary, top_k=0)


def test_mace_adapter_dir_resumes_and_refuses_adapters_of_another_base(pipe, tmp_path, monkeypatch):
    spec = EraseSpec(("square", "heart"))
    settings = {**QUICK_MACE, "adapter_dir": str(tmp_path)}
    first = erase(pipe, spec, "mace", progress=False, **settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heart.safetensors", "square.safetensors"]

    def must_not_train(*args, **kwargs):
        raise AssertionError("a stored adapter was retrained")

    monkeypatch.setattr(mace, "train_concept_lora", must_not_train)
    again = erase(pipe, spec, "mace", progress=False, **settings)  # a rerun (or a resumed one) fuses the stored LoRAs
    assert all(torch.equal(again.weights[k], first.weights[k]) for k in first.weights)
    with pytest.raises(ErasekitError, match="different base"):  # the refinement, so the LoRAs' base, changes
        erase(pipe, EraseSpec(("square", "heart"), preserve=("circle",)), "mace", progress=False, **settings)
    with pytest.raises(ErasekitError, match="other settings"):
        erase(pipe, spec, "mace", progress=False, **{**settings, "lr": 5e-3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heart.safetensors", "square.safetensors"]  # nothing lost
