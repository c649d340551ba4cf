"""Edits as diffusers LoRAs: a plain load_lora_weights reproduces them."""

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.lora import LORA_FILE, lora_factors
from erasekit.errors import ErasekitError
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline


def unet_out(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, states = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 32, 384, generator=g)
    with torch.no_grad():
        return unet(x, 500, encoder_hidden_states=states).sample


def test_closed_form_edit_is_an_exact_lora_that_diffusers_loads(pipe, embedded_dir, tmp_path):
    edit = erase(pipe, EraseSpec(("square",)), "uce", progress=False)
    export = lora_factors(edit, pipe.unet)
    assert export.relative_error < 1e-4 and max(export.ranks.values()) < 384
    edit.save(tmp_path / "edit", lora=export)
    assert (tmp_path / "edit" / LORA_FILE).exists() and Edit.load(tmp_path / "edit").card["lora"]["file"] == LORA_FILE
    with edit.applied(pipe):
        expected = unet_out(pipe.unet)
    fresh = load_pipeline(embedded_dir)
    fresh.load_lora_weights(tmp_path / "edit")  # plain diffusers, no erasekit involved
    assert torch.allclose(unet_out(fresh.unet), expected, atol=1e-4)
    assert not torch.allclose(unet_out(pipe.unet), expected, atol=1e-2)


def test_fine_tuned_edit_with_biases_loads_and_a_rank_cap_is_reported(pipe, embedded_dir, tmp_path):
    edit = erase(pipe, EraseSpec(("square",)), "esd-x", progress=False, iterations=2, sample_steps=3, lr=1e-3)
    full = lora_factors(edit, pipe.unet)
    assert any(k.endswith("lora_B.bias") for k in full.tensors) and full.relative_error < 1e-4
    capped = lora_factors(edit, pipe.unet, max_rank=2)
    assert max(capped.ranks.values()) == 2 and capped.relative_error > full.relative_error
    edit.save(tmp_path / "esd", lora=full)
    with edit.applied(pipe):
        expected = unet_out(pipe.unet)
    fresh = load_pipeline(embedded_dir)
    fresh.load_lora_weights(tmp_path / "esd")
    assert torch.allclose(unet_out(fresh.unet), expected, atol=1e-4)


def test_norm_parameters_cannot_travel_as_a_lora(pipe):
    name = next(n for n, _ in pipe.unet.named_parameters() if "norm" in n and n.endswith("weight"))
    edit = Edit({name: dict(pipe.unet.named_parameters())[name].detach() + 1})
    with pytest.raises(ErasekitError, match="LoRA cannot carry"):
        lora_factors(edit, pipe.unet)
