"""FMN (Forget-Me-Not): the marked tokens, the textual-inversion stage's norm pull, and attention
re-steering that takes the image's attention off the concept's tokens while the pipeline stays as it was."""

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.fmn import INVERSION_TOKENS, NORM_TARGET, learn_tokens, marked_positions
from erasekit.methods.runner import erase
from erasekit.primitives.attention import probing
from erasekit.primitives.denoising import denoising
from erasekit.primitives.image_batches import draw_images, noised_batch
from erasekit.primitives.run import RunContext
from erasekit.primitives.soft_prompt import TextPath


def test_defaults_are_the_official_configs_and_bad_input_is_one_line(pipe):
    config = make_config(get_method("fmn"), {})
    assert (config.steps, config.lr, config.weight_decay, config.batch_size) == (35, 2e-6, 1e-2, 1)
    assert (config.parameter_group, config.inversion_steps, config.inversion_lr, config.use_pooler) == (
        "full-weight",
        500,
        1e-3,
        True,
    )
    for bad in ({"steps": 0}, {"lr": -1}, {"concept_type": "identity"}):
        with pytest.raises(ErasekitError):
            make_config(get_method("fmn"), bad)
    with pytest.raises(ErasekitError, match="no anchors and no preserve set"):
        erase(pipe, EraseSpec(("square",), preserve=("circle",)), "fmn", progress=False, steps=1)


def test_the_concept_tokens_and_the_first_end_token_are_marked(pipe):
    path = TextPath(pipe)
    prompt = path.slotted("a photo of square", 0)
    mask = marked_positions(path, prompt, range(4, 5), use_pooler=True)
    assert mask[0].nonzero().flatten().tolist() == [4, prompt.length - 1]  # "square", then [SEP]
    assert marked_positions(path, prompt, range(4, 5), use_pooler=False)[0].nonzero().flatten().tolist() == [4]


def test_inversion_pulls_the_tokens_norms_towards_the_official_target(pipe):
    run = RunContext(pipe, progress=False)
    den, path = denoising(run), TextPath(pipe)
    images = draw_images(run, ["a photo of a square"], 2, 7.5, 3, 0, den)
    prompt = path.slotted("a photo of a square", INVERSION_TOKENS, replace="square")
    config = make_config(get_method("fmn"), {"inversion_steps": 20})
    vectors = learn_tokens(run, den, path, prompt, "square", images, config)
    assert vectors.shape == (INVERSION_TOKENS, path.table.shape[1])
    # three tokens start as N(0, I) draws, norm ≈ √384 ≈ 19.6; 20 pulls of 10 % leave 0.4 + 19.2 · 0.9²⁰ ≈ 2.7
    norms = vectors.norm(dim=-1)
    assert (norms[1:] < 4).all() and (norms > NORM_TARGET).all(), norms


def test_re_steering_takes_the_images_attention_off_the_concept_and_leaves_the_pipeline(pipe):
    run = RunContext(pipe, progress=False)
    den, path = denoising(run), TextPath(pipe)
    prompt = path.slotted("a photo of square", 0)
    mask = marked_positions(path, prompt, range(4, 5), use_pooler=True)
    cond = path.conditioning(prompt).detach()
    images = draw_images(run, ["a photo of square"], 2, 7.5, 3, 0, den)
    batch = noised_batch(run, images, 2, __import__("random").Random(0), run.generator(0), den)

    def attention(unet_pipe) -> float:
        with torch.no_grad(), probing(unet_pipe.unet) as probe:
            probe.token_mask = mask.expand(2, -1)
            den.predict(unet_pipe.unet, batch.x_t, batch.t, cond)
            return float(torch.sqrt(sum(m.square().sum() for m in probe.maps)))

    before_weights = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    before = attention(pipe)
    edit = erase(pipe, EraseSpec(("square",)), "fmn", progress=False, lr=1e-4, steps=30, inversion_steps=0, concept_images=4,
                 sample_steps=3)  # fmt: skip
    assert all(torch.equal(p, before_weights[n]) for n, p in pipe.unet.named_parameters())
    with edit.applied(pipe) as erased:
        after = attention(erased)
    assert after < 0.8 * before, (before, after)
