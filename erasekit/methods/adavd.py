"""AdaVD: Precise, Fast, and Low-cost Concept Erasure in Value Space (Wang et al., CVPR 2025).

Training-free and inference-time: every cross-attention value v of a prompt token loses its component
along the erased concepts' values t = W_v h (h the state of the concept's last token, the concept
encoded alone), scaled by a token-wise shift,

    v' = v − s(v) · (⟨t, v⟩ / ‖t‖²) · t,   s(v) = s / (1 + exp(−p (cos(t, v) − ε))),

with several concepts projected on the Gram–Schmidt basis of their values
(:mod:`erasekit.edits.values`, which also lists where this differs from the official code). Nothing is
trained and no weight changes: the edit is the concepts and these settings, and it acts as hooks on
the UNet's ``attn2.to_v`` when applied.

Defaults: the official ``src/main.py`` (WYuan1001/AdaVD @ c2d2962) under the paper's symbols: p = 100,
ε = 0.93, s = 2 (its ``--sigmoid_a/b/c``; the nudity script used 10, 0.45, 2). Its ``--token_sim``
switch for the shift is off unless given; the demo and the paper turn it on, and so does ``shift``
here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.values import VALUE_DECOMPOSITION, check_value_family
from erasekit.methods.base import register
from erasekit.primitives.run import RunContext
from erasekit.settings import check_settings, config_field


@dataclass
class AdaVDConfig:
    """The adaptive shift under the paper's symbols (official --sigmoid_a/b/c)."""

    p: float = config_field(100.0, "slope p of the shift's sigmoid (official 100; nudity 10)", ge=0.0, le=1e4)
    epsilon: float = config_field(
        0.93, "ε: the cosine to the concept's value at which the shift is s/2 (official 0.93; nudity 0.45)", ge=-1.0, le=1.0
    )
    s: float = config_field(
        2.0, "height s of the shift: the most a token's projection is scaled by (official 2)", gt=0.0, le=100.0
    )
    shift: bool = config_field(True, "the adaptive shift (the paper; official --token_sim); off: the plain projection")

    def __post_init__(self) -> None:
        check_settings(self)


@register(
    "adavd",
    "AdaVD (Wang et al. 2025): training-free projection of the concept out of each token's cross-attention value",
    AdaVDConfig,
    changes_weights=False,
    families=("sd", "sdxl"),
)
def erase(run: RunContext, spec: EraseSpec, config: AdaVDConfig) -> Edit:
    """AdaVD's edit for ``spec``: no weights, a card whose ``inference`` holds the concepts and the shift;
    anchors and a preserve set are refused (the decomposition has neither)."""
    check_value_family(run.pipe)
    spec.targets_only("AdaVD removes the concepts' values from every token")
    return Edit(
        {}, {"config": asdict(config), **VALUE_DECOMPOSITION.card_fields({"concepts": list(spec.targets), **asdict(config)})}
    )
