"""A toy-sized run of the real training code: every stage, the export, and resuming."""

import json

import torch

from erasekit.world.training import TrainConfig, train_all


def test_train_export_and_resume(tmp_path):
    cfg = dict(
        train_images=192, test_images=64, evaluator_images=192, evaluator_epochs=1, evaluator_batch=64,
        vae_steps=2, vae_batch=8, adapt_images=64, adapt_epochs=1, unet_steps=2, unet_batch=8, checkpoint_every=1,
        work_dir=tmp_path / "work", model_dir=tmp_path / "model",
    )  # fmt: skip
    path = train_all(TrainConfig(**cfg))
    provenance = json.loads((path / "provenance.json").read_text())
    assert provenance["unet_steps"] == 2 and provenance["command"] == "erasekit world train"
    assert (path / "evaluator" / "evaluator.safetensors").exists()
    assert not (path / "text_encoder").exists()  # written by `erasekit setup`, never committed
    assert json.loads((path / "tokenizer" / "tokenizer_config.json").read_text())["model_max_length"] == 32

    # a second run with a larger budget resumes from the UNet checkpoint instead of starting over
    first = torch.load(tmp_path / "work" / "unet.pt")
    assert first["step"] == 2
    path = train_all(TrainConfig(**{**cfg, "unet_steps": 3}))
    assert json.loads((path / "provenance.json").read_text())["unet_steps"] == 3
    assert torch.load(tmp_path / "work" / "unet.pt")["step"] == 3

    from erasekit.models.embedded import ensure_text_encoder
    from erasekit.models.loading import load_pipeline

    pipe = load_pipeline(ensure_text_encoder(path))
    assert pipe.unet.config.sample_size == 16


def test_flux_train_export_and_resume(tmp_path):
    """erasekit-tiny-flux's training on a toy budget: the export is a FluxPipeline directory that `setup`
    completes with both text encoders (unmasked, as FluxPipeline encodes), and a rerun resumes."""
    from erasekit.models.embedded import ensure_text_encoder
    from erasekit.models.families import family_of_model
    from erasekit.models.loading import load_pipeline
    from erasekit.world.flux_training import FluxTrainConfig, train_flux

    cfg = dict(train_images=64, steps=2, batch=8, checkpoint_every=1, work_dir=tmp_path / "work", model_dir=tmp_path / "flux")
    path = train_flux(FluxTrainConfig(**cfg))
    provenance = json.loads((path / "provenance.json").read_text())
    assert provenance["transformer_steps"] == 2 and provenance["command"] == "erasekit world train --family flux"
    assert not (path / "text_encoder").exists() and not (path / "text_encoder_2").exists()
    assert family_of_model(path).name == "flux"
    path = train_flux(FluxTrainConfig(**{**cfg, "steps": 3}))
    assert torch.load(tmp_path / "work" / "transformer.pt")["step"] == 3
    pipe = load_pipeline(ensure_text_encoder(path))
    assert type(pipe).__name__ == "FluxPipeline" and not pipe.text_encoder_2.config.use_attention_mask
    image = pipe("a photo of a square", num_inference_steps=2, height=64, width=64, max_sequence_length=32, output_type="np")
    assert image.images.shape == (1, 64, 64, 3)
