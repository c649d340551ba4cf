"""Configs of the full-size layouts (SD-1.5, SD-2.1, SDXL UNets) and random pipelines of SD-1.5, SDXL and FLUX.

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


def _clip_text(tokenizer: object, hidden: int, layers: int, heads: int, projection: bool = False) -> object:
    """A random CLIP text encoder over the embedded WordPiece tokenizer (CLIP's vocabulary cannot be had
    offline); ``projection``: the second SDXL encoder, whose pooled output is projected."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=77, hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, projection_dim=hidden, eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def random_sdxl_pipeline(tiny: bool = True, device: str = "cpu", dtype: object = None, seed: int = 0) -> object:
    """A StableDiffusionXLPipeline of SDXL's layout with random weights: two CLIP text encoders whose
    states are concatenated (768 + 1280 = 2048), the pooled projection of the second, the added time
    ids, SDXL's UNet (or, ``tiny``, every layer name with shrunken widths) and an SD VAE."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from erasekit.models.embedded import load_tokenizer

    tokenizer = load_tokenizer()
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    with torch.device(device):
        if tiny:
            first, second = _clip_text(tokenizer, 32, 2, 2), _clip_text(tokenizer, 32, 2, 2, projection=True)
            unet = dict(SDXL, block_out_channels=(32, 64, 64), transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 4),
                        sample_size=8, cross_attention_dim=64, addition_time_embed_dim=8, projection_class_embeddings_input_dim=80)  # fmt: skip
            vae = dict(block_out_channels=(8, 16), norm_num_groups=8)
        else:
            first, second = _clip_text(tokenizer, 768, 12, 12), _clip_text(tokenizer, 1280, 32, 20, projection=True)
            unet, vae = dict(SDXL), dict(block_out_channels=(128, 256, 512, 512))
        blocks = len(vae["block_out_channels"])
        vae_model = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                                  latent_channels=4, layers_per_block=2, **vae)  # fmt: skip
        pipe = StableDiffusionXLPipeline(
            vae=vae_model, text_encoder=first, text_encoder_2=second, tokenizer=tokenizer, tokenizer_2=tokenizer,
            unet=UNet2DConditionModel(**unet), scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear"),
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype or torch.float32)


def random_flux_pipeline(tiny: bool = True, device: str = "cpu", dtype: object = None, seed: int = 0) -> object:
    """A FluxPipeline of FLUX.1-dev's layout with random weights: a CLIP text encoder for the pooled
    vector, a T5 encoder for the token states, FLUX.1's transformer (19 double and 38 single blocks,
    24 heads of 128, the guidance embedding) and a 16-channel VAE; ``tiny`` keeps every layer name with
    one block of each kind and shrunken widths."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from erasekit.models.embedded import load_tokenizer

    tokenizer = load_tokenizer()
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    if tiny:
        clip_dims, t5 = (32, 2, 2), dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        transformer = dict(num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
                           joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(2, 2, 4))  # fmt: skip
        vae = dict(
            block_out_channels=(8, 8, 8, 8), norm_num_groups=8, latent_channels=4
        )  # FLUX.1's factor 8: 512 px is 32² tokens
    else:
        clip_dims, t5 = (768, 12, 12), dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
        transformer = dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                           joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56))  # fmt: skip
        vae = dict(block_out_channels=(128, 256, 512, 512), latent_channels=16)
    with torch.device(device):
        text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **t5))
        blocks = len(vae["block_out_channels"])
        vae_model = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                                  shift_factor=0.0 if tiny else 0.1159, scaling_factor=1.0 if tiny else 0.3611, **vae)  # fmt: skip
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae_model, text_encoder=_clip_text(tokenizer, *clip_dims),
            tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer,
            transformer=FluxTransformer2DModel(patch_size=1, in_channels=4 * vae["latent_channels"], guidance_embeds=True,
                                               **transformer),
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.text_encoder_2.eval()  # built in training mode: T5's dropout would make every encoding differ
    return pipe.to(device, dtype or torch.float32)


def random_sd3_pipeline(tiny: bool = True, device: str = "cpu", dtype: object = None, seed: int = 0) -> object:
    """A StableDiffusion3Pipeline of SD3-medium's layout with random weights: two CLIP encoders whose
    penultimate states are concatenated (768 + 1280) and padded to T5's width, then followed by T5's
    token states in one sequence; both CLIPs' pooled projections side by side (2048); the MMDiT
    (24 joint blocks of 24 heads of 64) on a 16-channel VAE; ``tiny`` keeps every layer name with two
    blocks and shrunken widths."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel

    from erasekit.models.embedded import load_tokenizer

    tokenizer = load_tokenizer()
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    if tiny:
        first, second, t5 = (32, 2, 2), (32, 2, 2), dict(d_model=64, d_kv=8, d_ff=128, num_layers=2, num_heads=4)
        transformer = dict(sample_size=8, num_layers=2, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=64,
                           caption_projection_dim=16, pooled_projection_dim=64, in_channels=4, out_channels=4,
                           pos_embed_max_size=16)  # fmt: skip
        vae = dict(block_out_channels=(8, 8), norm_num_groups=8, latent_channels=4)
    else:
        first, second, t5 = (768, 12, 12), (1280, 32, 20), dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
        transformer = dict(sample_size=128, num_layers=24, attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                           caption_projection_dim=1536, pooled_projection_dim=2048, in_channels=16, out_channels=16,
                           pos_embed_max_size=192)  # fmt: skip
        vae = dict(block_out_channels=(128, 256, 512, 512), latent_channels=16)
    with torch.device(device):
        blocks = len(vae["block_out_channels"])
        vae_model = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                                  shift_factor=0.0 if tiny else 0.0609, scaling_factor=1.0 if tiny else 1.5305, **vae)  # fmt: skip
        pipe = StableDiffusion3Pipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae_model,
            text_encoder=_clip_text(tokenizer, *first, projection=True), tokenizer=tokenizer,
            text_encoder_2=_clip_text(tokenizer, *second, projection=True), tokenizer_2=tokenizer,
            text_encoder_3=T5EncoderModel(T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **t5)),
            tokenizer_3=tokenizer, transformer=SD3Transformer2DModel(patch_size=2, **transformer),
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.text_encoder_3.eval()  # built in training mode: T5's dropout would make every encoding differ
    return pipe.to(device, dtype or torch.float32)
