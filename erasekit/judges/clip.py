"""CLIP as a judge (transformers ``CLIPModel``), for real Stable Diffusion models.

MACE's zero-shot evaluation: each head is a label set (its ten CIFAR-10 classes, celebrities,
artists), an image's probabilities are the softmax of 100 × cos(image, "a photo of the {label}")
over the head's labels (MACE used ViT-B/32 and that template), and CLIP score is
100 × max(cos(image, prompt), 0) as torchmetrics defines it. The image embeddings serve as the
features of a CLIP-space Fréchet distance between the original's and the erased model's images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from erasekit.errors import ErasekitError
from erasekit.judges.base import Reading

if TYPE_CHECKING:
    from transformers import CLIPModel

MACE_CLIP_TEMPLATE = "a photo of the {}"
NEUTRAL = "image"  # the "nothing in particular" label of presence decisions
MACE_CLIP_MODEL = "openai/clip-vit-base-patch32"
# MACE's object task: the CIFAR-10 classes and the three synonyms of each (its 10_objects_paraphrase.json).
MACE_CIFAR10_SYNONYMS: dict[str, tuple[str, str, str]] = {
    "airplane": ("aircraft", "plane", "jet"),
    "automobile": ("car", "vehicle", "motorcar"),
    "bird": ("avian", "fowl", "winged creature"),
    "cat": ("feline", "kitty", "housecat"),
    "deer": ("hart", "stag", "doe"),
    "dog": ("canine", "pooch", "hound"),
    "frog": ("amphibian", "anuran", "tadpole"),
    "horse": ("equine", "steed", "mount"),
    "ship": ("vessel", "boat", "watercraft"),
    "truck": ("lorry", "rig", "hauler"),
}
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipJudge:
    """CLIP zero-shot classification over ``heads`` and CLIP score, on uint8 (n, H, W, 3) images."""

    name = "clip"

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: object,
        heads: dict[str, tuple[str, ...]] | None = None,
        template: str = MACE_CLIP_TEMPLATE,
        batch_size: int = 32,
        source: str = "",
    ) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        self.heads = dict(heads or {"object": tuple(MACE_CIFAR10_SYNONYMS)})
        self.template = template
        self.batch_size = batch_size
        self.size = model.config.vision_config.image_size
        self.source = source

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = MACE_CLIP_MODEL, heads: dict[str, tuple[str, ...]] | None = None, device: str | None = None
    ) -> ClipJudge:
        """CLIP from a hub id or directory; ``device`` defaults to CUDA when present."""
        from transformers import AutoTokenizer, CLIPModel

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            model = CLIPModel.from_pretrained(name_or_path).to(device)
            return cls(model, AutoTokenizer.from_pretrained(name_or_path), heads, source=name_or_path)
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ErasekitError(
                f"cannot load CLIP from {name_or_path!r} ({first}); pass --clip-model with a local CLIP directory when offline"
            ) from err

    def settings(self) -> dict:
        """Judge name, CLIP model, template and heads, for the record."""
        return {
            "judge": self.name,
            "model": self.source,
            "template": self.template,
            "heads": {k: list(v) for k, v in self.heads.items()},
        }

    def read(self, images: np.ndarray) -> Reading:
        """Zero-shot probabilities over every head's labels (through the template), with the image embeddings as features."""
        features = self.image_features(images)
        probs = {head: self._zero_shot(features, list(labels), self.template) for head, labels in self.heads.items()}
        return Reading(self.heads, probs, features.cpu().numpy())

    def present(self, images: np.ndarray, concept: str, alternatives: tuple[str, ...] = ()) -> np.ndarray:
        """Top-1 of zero-shot classification among ``concept``, ``alternatives`` and a neutral "image":
        an erased concept's image need not look like any alternative to count as absent."""
        candidates = list(dict.fromkeys((concept, *alternatives, NEUTRAL)))
        probs = self._zero_shot(self.image_features(images), candidates, self.template)
        return probs.argmax(1) == candidates.index(concept)

    def _pixels(self, images: np.ndarray) -> torch.Tensor:
        # CLIP's preprocessing: bicubic resize of the short side, centre crop, normalise.
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        x = nn.functional.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bicubic", align_corners=False)
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size].clamp(0, 1)
        mean, std = (torch.tensor(v, device=x.device)[:, None, None] for v in (_CLIP_MEAN, _CLIP_STD))
        return ((x - mean) / std).to(self.model.dtype)

    @torch.no_grad()
    def image_features(self, images: np.ndarray) -> torch.Tensor:
        """Unit-norm CLIP image embeddings (n, d) of uint8 (n, H, W, 3) images, ``batch_size`` at a time."""
        out = [
            self.model.get_image_features(pixel_values=self._pixels(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        return nn.functional.normalize(torch.cat([_pooled(o) for o in out]), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm CLIP text embeddings (n, d) of ``texts``."""
        tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        return nn.functional.normalize(_pooled(out), dim=-1)

    def zero_shot(self, images: np.ndarray, classes: list[str], template: str = MACE_CLIP_TEMPLATE) -> np.ndarray:
        """(n, len(classes)) probabilities: softmax over 100 × cos(image, template.format(class))."""
        return self._zero_shot(self.image_features(images), classes, template)

    def _zero_shot(self, features: torch.Tensor, classes: list[str], template: str) -> np.ndarray:
        logits = 100.0 * features @ self.text_features([template.format(c) for c in classes]).T
        return logits.softmax(-1).cpu().numpy()

    def clip_score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """Per image, 100 × max(cos(image, its prompt), 0)."""
        if len(prompts) != len(images):
            raise ErasekitError(f"{len(images)} images but {len(prompts)} prompts")
        cos = (self.image_features(images) * self.text_features(prompts)).sum(-1)
        return (100.0 * cos.clamp(min=0)).cpu().numpy()


def _pooled(out: object) -> torch.Tensor:
    # transformers returns a tensor, or (in newer versions) an output object holding the projection
    return out if isinstance(out, torch.Tensor) else out.pooler_output
