"""UNet2DConditionModel configs of the full-size Stable Diffusion layouts (SD-1.5, SD-2.1, SDXL).

Weights cannot be had everywhere; these configs build randomly initialised (or meta-device) UNets
with the real layer names and shapes, for tests and memory benchmarks of the full-size code paths.
"""

SD15 = dict(
    sample_size=64, cross_attention_dim=768, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=8,
)  # fmt: skip
SD21 = {
    **SD15,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
    "sample_size": 96,
}
SDXL = dict(
    sample_size=128, cross_attention_dim=2048, block_out_channels=(320, 640, 1280), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)  # fmt: skip


def random_sd15_pipeline(tiny: bool = False, device: str = "cpu", dtype: object = None, seed: int = 0) -> object:
    """A StableDiffusionPipeline of the SD-1.5 layout with random weights: a CLIP text encoder (12 layers,
    768-d; the embedded model's WordPiece tokenizer padding to 77, since CLIP's vocabulary cannot be had
    offline), SD-1.5's UNet and VAE, DDIM with SD's schedule. ``tiny`` keeps every layer name but
    shrinks the widths, for CPU tests of code written for real models. Built on ``device`` in ``dtype``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from erasekit.models.embedded import load_tokenizer

    tokenizer = load_tokenizer()
    tokenizer.model_max_length = 77
    if tiny:
        unet = dict(SD15, block_out_channels=(32, 32, 64, 64), attention_head_dim=2, sample_size=8, cross_attention_dim=64)
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
        vae = dict(block_out_channels=(8, 8, 16, 16), norm_num_groups=8)
    else:
        unet = dict(SD15)
        text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        vae = dict(block_out_channels=(128, 256, 512, 512))
    torch.manual_seed(seed)
    with torch.device(device):
        special = dict(
            eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77, **special, **text))
        vae_model = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
            layers_per_block=2, **vae,
        )  # fmt: skip
        pipe = StableDiffusionPipeline(
            vae=vae_model, text_encoder=text_encoder, tokenizer=tokenizer, unet=UNet2DConditionModel(**unet),
            scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                    set_alpha_to_one=False, steps_offset=1),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype or torch.float32)
