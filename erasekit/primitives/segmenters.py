"""Segmenters: foreground masks of generated images, for MACE's attention loss.

MACE restricts its loss to the region where the concept is, found with Grounded-SAM on real
models: GroundingDINO turns the concept's name into boxes, SAM turns each box into a mask. Here
both come from transformers (``GroundingDinoForObjectDetection``, ``SamModel``), loaded from hub
ids or local directories. The embedded world has its own segmenter: the world evaluator's mask
head, trained on the generator's exact masks. ``"none"`` uses the whole image (MACE's choice for
styles, which have no region).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from erasekit.errors import ErasekitError

SEGMENTERS = ("world", "none", "grounded-sam")
# MACE's official Grounded-SAM: GroundingDINO Swin-T (OGC) and SAM ViT-H; thresholds of the Grounded-SAM demo.
GROUNDING_MODEL = "IDEA-Research/grounding-dino-tiny"
SAM_MODEL = "facebook/sam-vit-huge"
BOX_THRESHOLD = 0.3
TEXT_THRESHOLD = 0.25


class Segmenter(Protocol):
    """What gives MACE its masks: called with uint8 images and the concept's name."""

    def __call__(self, images: np.ndarray, concept: str) -> torch.Tensor:
        """(B, 1, H, W) masks in [0, 1] of uint8 (B, H, W, 3) images showing ``concept``."""
        ...


class WorldSegmenter:
    """The embedded evaluator's mask head (its sigmoid > 0.5 is foreground)."""

    def __init__(self) -> None:
        from erasekit.world.evaluator import load_world_evaluator

        self.model = load_world_evaluator()

    @torch.no_grad()
    def __call__(self, images: np.ndarray, concept: str) -> torch.Tensor:
        logits = self.model(torch.as_tensor(images))["mask"]
        return (logits.sigmoid() > 0.5).float()[:, None]


class WholeImage:
    """Masks of the whole image (MACE's choice for styles, which have no region)."""

    def __call__(self, images: np.ndarray, concept: str) -> torch.Tensor:
        return torch.ones(len(images), 1, images.shape[1], images.shape[2], device="cpu")  # moved by the caller, as every mask


class GroundedSam:
    """Grounded-SAM: the union of SAM's masks for every box GroundingDINO finds for the concept's name.

    An image where no box clears the thresholds gets an empty mask (MACE then skips it).
    """

    def __init__(
        self,
        grounding_model: str = GROUNDING_MODEL,
        sam_model: str = SAM_MODEL,
        box_threshold: float = BOX_THRESHOLD,
        text_threshold: float = TEXT_THRESHOLD,
        device: str | torch.device | None = None,
    ) -> None:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection, SamModel, SamProcessor

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.detector_processor = AutoProcessor.from_pretrained(grounding_model)
            self.detector = GroundingDinoForObjectDetection.from_pretrained(grounding_model).to(self.device).eval()
            self.sam_processor = SamProcessor.from_pretrained(sam_model)
            self.sam = SamModel.from_pretrained(sam_model).to(self.device).eval()
        except OSError as err:
            raise ErasekitError(
                f"could not load Grounded-SAM ({grounding_model}, {sam_model}): {err}; "
                "give local directories or hub ids reachable from this machine"
            ) from err
        self.box_threshold, self.text_threshold = box_threshold, text_threshold

    @staticmethod
    def query(concept: str) -> str:
        """GroundingDINO's text query for ``concept``: lower case, ended by one period."""
        # GroundingDINO reads lower-case phrases, each ended by a period.
        return concept.strip().lower().rstrip(".") + "."

    @torch.no_grad()
    def boxes(self, images: np.ndarray, concept: str) -> list[torch.Tensor]:
        """(K, 4) pixel boxes (x0, y0, x1, y1) per image."""
        from PIL import Image

        pil = [Image.fromarray(image) for image in images]
        inputs = self.detector_processor(images=pil, text=[self.query(concept)] * len(pil), return_tensors="pt").to(self.device)
        outputs = self.detector(**inputs)
        results = self.detector_processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[image.shape[:2] for image in images],
        )
        return [result["boxes"].cpu() for result in results]

    @torch.no_grad()
    def __call__(self, images: np.ndarray, concept: str) -> torch.Tensor:
        masks = torch.zeros(len(images), 1, images.shape[1], images.shape[2])
        for i, (image, boxes) in enumerate(zip(images, self.boxes(images, concept), strict=True)):
            if len(boxes) == 0:
                continue
            inputs = self.sam_processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt").to(self.device)
            outputs = self.sam(**inputs, multimask_output=False)
            box_masks = self.sam_processor.post_process_masks(
                outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
            )[0]  # (K, 1, H, W) booleans
            masks[i, 0] = box_masks.any(dim=0)[0].float()
        return masks


def make_segmenter(name: str, device: torch.device | str | None = None, **options: object) -> Segmenter:
    """A segmenter by name; ``device`` and ``options`` go to Grounded-SAM (model ids or directories, thresholds).
    Masks come back on the CPU whichever device computed them."""
    if name == "world":
        return WorldSegmenter()
    if name == "none":
        return WholeImage()
    if name == "grounded-sam":
        return GroundedSam(device=device, **options)
    raise ErasekitError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")
