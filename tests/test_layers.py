"""Layer access on the real layer structure: full-size SD-1.5, SD-2.1 and SDXL UNets built from
their configs on the meta device (shapes and names, no weights), and the embedded UNet."""

import pytest
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel, UNet2DModel

from erasekit.errors import ErasekitError
from erasekit.models import embedded
from erasekit.models.layers import ESD_GROUPS, cross_attentions, kv_projections, parameter_group
from erasekit.models.reference_configs import SD15, SD21, SDXL


@pytest.mark.parametrize(
    "config, layers, text_dim, params",
    [(SD15, 16, 768, 859_520_964), (SD21, 16, 1024, 865_910_724), (SDXL, 70, 2048, 2_567_463_684)],
    ids=["sd-1.5", "sd-2.1", "sdxl"],
)
def test_full_size_unets(config, layers, text_dim, params):
    with init_empty_weights():
        unet = UNet2DConditionModel(**config)
    assert sum(p.numel() for p in unet.parameters()) == params
    found = cross_attentions(unet)
    assert len(found) == layers
    assert all(layer.name.endswith("transformer_blocks.0.attn2") or ".transformer_blocks." in layer.name for layer in found)
    proj = kv_projections(unet)
    assert len(proj) == 2 * layers and all(m.in_features == text_dim for m in proj.values())
    names = {n for n, _ in parameter_group(unet, "esd-x")}
    assert names and all(".attn2." in n for n in names)
    strict = {n for n, _ in parameter_group(unet, "esd-x-strict")}
    assert strict < names and all(".to_k." in n or ".to_v." in n for n in strict)
    u = {n for n, _ in parameter_group(unet, "esd-u")}
    assert not (u & names) and {"conv_out.weight", "time_embedding.linear_1.weight"} <= u
    everything = {n for n, _ in parameter_group(unet, "esd-all")}
    assert everything == {n for n, p in unet.named_parameters() if "norm" not in n}


def test_embedded_unet_layers():
    unet = embedded.new_unet()
    found = cross_attentions(unet)
    assert [layer.name for layer in found] == [
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2",
        "down_blocks.2.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.0.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.0.attentions.1.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
        "mid_block.attentions.0.transformer_blocks.0.attn2",
    ]
    assert found[0].to_k.in_features == embedded.TEXT_DIM


def test_unet_without_cross_attention_is_refused():
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(16, 16),
        norm_num_groups=8,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
    )
    with pytest.raises(ErasekitError, match="no cross-attention"):
        cross_attentions(unet)
    with pytest.raises(ErasekitError, match="unknown ESD parameter group"):
        list(parameter_group(embedded.new_unet(), "esd-q"))
    assert set(ESD_GROUPS) == {"esd-x", "esd-u", "esd-all", "esd-x-strict"}


def official_esd_selection(unet, train_method):
    """get_esd_trainable_parameters of the official esd_sd.py, restated: by module class name and module name."""
    names = []
    for name, module in unet.named_modules():
        if module.__class__.__name__ in ("Linear", "Conv2d", "LoRACompatibleLinear", "LoRACompatibleConv"):
            chosen = {
                "esd-x": "attn2" in name,
                "esd-u": "attn2" not in name,
                "esd-all": True,
                "esd-x-strict": "attn2.to_k" in name or "attn2.to_v" in name,
            }[train_method]
            if chosen:
                names += [f"{name}.{n}" for n, _ in module.named_parameters()]
    return names


@pytest.mark.parametrize("group", ESD_GROUPS)
def test_esd_groups_are_the_official_selection(group):
    unets = {"embedded": embedded.new_unet()}
    with init_empty_weights():
        unets["sd-1.5"] = UNet2DConditionModel(**SD15)
    for unet in unets.values():
        assert [n for n, _ in parameter_group(unet, group)] == official_esd_selection(unet, group)
    counts = {"esd-x": 35, "esd-u": 189, "esd-all": 224, "esd-x-strict": 14}  # the count on the embedded UNet
    assert len(list(parameter_group(unets["embedded"], group))) == counts[group]
    norms = [n for n, _ in parameter_group(unets["sd-1.5"], group, "with-norms") if "norm" in n]
    assert bool(norms) == (group in ("esd-u", "esd-all"))  # the older selection trained norm layers too
