"""Grounded-SAM through transformers, on tiny random GroundingDINO and SAM models (plumbing, not quality)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.runner import erase
from erasekit.primitives.segmenters import GroundedSam, make_segmenter

SIZE = 64


def save_tiny_grounded_sam(root: Path) -> tuple[Path, Path]:
    """Random GroundingDINO (Swin + BERT) and SAM of a few kB, with processors for 64-pixel images."""
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SamConfig,
        SamImageProcessor,
        SamModel,
        SamProcessor,
        SwinConfig,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "square", "circle"]
    (root / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    swin = SwinConfig(
        window_size=7, embed_dim=8, depths=[1] * 4, num_heads=[1] * 4, image_size=SIZE,
        out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4],
    )  # fmt: skip
    text = {"model_type": "bert", "vocab_size": len(words), "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 32}  # fmt: skip
    detector = GroundingDinoForObjectDetection(GroundingDinoConfig(
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=8, decoder_ffn_dim=8, num_queries=5, encoder_n_points=1, decoder_n_points=1,
        backbone_config=swin, text_config=text, max_text_len=16,
    ))  # fmt: skip
    detector_processor = GroundingDinoProcessor(
        # 128 pixels, so that the smallest feature level is above 1×1 (GroupNorm refuses one value per group)
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 2 * SIZE, "longest_edge": 2 * SIZE}),
        tokenizer=BertTokenizerFast(vocab_file=str(root / "vocab.txt")),
    )
    sam = SamModel(SamConfig(
        vision_config=dict(hidden_size=16, output_channels=8, num_hidden_layers=1, num_attention_heads=2, image_size=SIZE,
                           patch_size=8, window_size=4, global_attn_indexes=[0], mlp_dim=16, num_pos_feats=4),
        prompt_encoder_config=dict(hidden_size=8, image_size=SIZE, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=8, mlp_dim=16, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=8),
    ))  # fmt: skip
    sam_processor = SamProcessor(SamImageProcessor(size={"longest_edge": SIZE}, pad_size={"height": SIZE, "width": SIZE}))
    for directory, model, processor in ((root / "dino", detector, detector_processor), (root / "sam", sam, sam_processor)):
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
    return root / "dino", root / "sam"


@pytest.fixture(scope="module")
def tiny_grounded_sam(tmp_path_factory) -> tuple[Path, Path]:
    return save_tiny_grounded_sam(tmp_path_factory.mktemp("grounded-sam"))


def images(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def test_grounded_sam_unions_the_masks_of_the_boxes_it_finds(tiny_grounded_sam):
    dino, sam = tiny_grounded_sam
    segmenter = make_segmenter(
        "grounded-sam", grounding_model=str(dino), sam_model=str(sam), box_threshold=0.0, text_threshold=0.0
    )
    boxes = segmenter.boxes(images(2), "Square")
    assert [b.shape for b in boxes] == [(5, 4), (5, 4)]  # every query clears a zero threshold
    assert all(((b >= -1e-3) & (b <= SIZE + 1e-3)).all() for b in boxes)  # pixel coordinates of the image
    masks = segmenter(images(2), "Square")
    assert masks.shape == (2, 1, SIZE, SIZE)
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and masks.sum() > 0


def test_grounded_sam_gives_an_empty_mask_when_nothing_is_found(tiny_grounded_sam):
    dino, sam = tiny_grounded_sam
    segmenter = GroundedSam(str(dino), str(sam), box_threshold=1.01)
    assert GroundedSam.query(" Square. ") == "square."
    assert segmenter(images(1), "square").sum() == 0


def test_grounded_sam_reports_a_model_it_cannot_load(tmp_path):
    with pytest.raises(ErasekitError, match="could not load Grounded-SAM"):
        GroundedSam(str(tmp_path / "no-such-detector"), str(tmp_path / "no-such-sam"))


def test_mace_trains_on_grounded_sam_masks(pipe, tiny_grounded_sam):
    dino, sam = tiny_grounded_sam
    quick = dict(images_per_concept=1, steps=1, sample_steps=2, lam=10.0, segmenter="grounded-sam",
                 grounding_model=str(dino), sam_model=str(sam), box_threshold=0.0, text_threshold=0.0)  # fmt: skip
    edit = erase(pipe, EraseSpec(("square",)), "mace", progress=False, **quick)
    assert edit.card["config"]["segmenter"] == "grounded-sam"
    with pytest.raises(ErasekitError, match="no foreground"):
        erase(pipe, EraseSpec(("square",)), "mace", progress=False, **{**quick, "box_threshold": 1.01})
