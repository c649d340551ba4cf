"""Single-file checkpoints in the original (LDM) layout: written by erasekit, read by diffusers."""

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

from erasekit.errors import ErasekitError
from erasekit.models.ldm_checkpoint import UNET_PREFIX, save_single_file, unet_to_ldm
from erasekit.models.loading import load_pipeline
from erasekit.models.reference_configs import SD15, SDXL


def test_embedded_pipeline_round_trips_through_from_single_file(pipe, embedded_dir, tmp_path):
    path = save_single_file(pipe, tmp_path / "tiny.safetensors")
    loaded = load_pipeline(path, config=embedded_dir)
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert not list(tmp_path.glob("*.tmp*"))


def test_sd15_unet_names_match_the_original_checkpoint():
    with init_empty_weights():
        unet = UNet2DConditionModel(**SD15)
    ldm = unet_to_ldm(unet)
    # names as they appear in v1-5-pruned-emaonly.ckpt
    for name in (
        "input_blocks.3.0.op.weight",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "input_blocks.4.0.skip_connection.weight",
        "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight",
        "middle_block.1.transformer_blocks.0.attn2.to_v.weight",
        "middle_block.2.emb_layers.1.weight",
        "time_embed.2.bias",
        "out.2.weight",
    ):
        assert name in ldm, name
    back = convert_ldm_unet_checkpoint({UNET_PREFIX + k: v for k, v in ldm.items()}, dict(unet.config))
    assert back.keys() == unet.state_dict().keys()


def test_sdxl_and_wrong_suffix_are_refused(pipe, tmp_path):
    with init_empty_weights():
        unet = UNet2DConditionModel(**SDXL)
    with pytest.raises(ErasekitError, match="SDXL"):
        unet_to_ldm(unet)
    with pytest.raises(ErasekitError, match=r"\.safetensors"):
        save_single_file(pipe, tmp_path / "tiny.ckpt")
