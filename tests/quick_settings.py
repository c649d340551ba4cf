"""Small settings of every registered method, shared by the tests that run the whole registry."""

import pytest

from erasekit.concepts import EraseSpec


def one_half_precision_in_ci(cases: list[tuple], precisions: list[tuple[object, str]]) -> list:
    """pytest params of every case in every half precision (value, name): CI runs each case in one of them,
    fp16 and bf16 in turn down the list, and `pytest -m slow` the other."""
    return [pytest.param(*case, value, id="-".join((*map(str, case), name)), marks=() if (i + j) % 2 == 0 else pytest.mark.slow)
            for i, case in enumerate(cases) for j, (value, name) in enumerate(precisions)]  # fmt: skip


# Small settings of every registered method: a method added without an entry here fails the first test.
QUICK = {
    "uce": {},
    "speed": {},
    "rece": {"epochs": 2, "validation_samples": 1, "sample_steps": 2},
    "mace": {"steps": 3, "images_per_concept": 2, "sample_steps": 3},
    "realera": {"epochs": 3, "m": 4, "sample_steps": 3, "outside_preserve": 0.01},
    "esd-x": {"iterations": 3, "sample_steps": 3},
    "esd-u": {"iterations": 2, "sample_steps": 2},
    "esd-all": {"iterations": 2, "sample_steps": 2},
    "esd-x-strict": {"iterations": 2, "sample_steps": 2},
    "race": {"iterations": 2, "esd_iterations": 1, "pgd_steps": 2, "sample_steps": 2},
    "ac": {"anchor_images": 2, "steps": 2, "sample_steps": 2, "batch_size": 2, "preserve_images": 1},
    "sld": {},
    "spm": {"iterations": 3, "sample_steps": 3, "warmup_steps": 0, "anchor_source": "embedding"},
    "doco": {"anchor_images": 2, "steps": 3, "warm_up": 1, "sample_steps": 2, "batch_size": 2, "preserve_images": 1},
    "advunlearn": {"iterations": 3, "warmup_iterations": 1, "attack_steps": 2, "sample_steps": 2, "retain_batch": 1},
    "receler": {"iterations": 2, "adversarial_steps": 2, "rank": 4, "sample_steps": 2},
    "fmn": {"concept_images": 2, "inversion_steps": 2, "steps": 2, "sample_steps": 2},
    "adavd": {},
    "sdd": {"iterations": 3, "sample_steps": 3},
    "salun": {"concept_images": 4, "preserve_images": 2, "batch_size": 2, "epochs": 1, "sample_steps": 2},
    "gloce": {"n_generation": 1, "st_timestep": 0, "end_timestep": 2, "update_rank": 2},
    "safree": {},
    "ant": {"iterations": 2, "sample_steps": 3, "before_step": 1, "mask_seeds": 2, "mask_iterations": 1},
    "stereo": {"rounds": 2, "iterations": 2, "inversion_steps": 2, "gallery_images": 2, "sample_steps": 2},
}
SPEC = EraseSpec(("square",), preserve=("circle",))
NO_PRESERVE = ("sld", "fmn", "adavd", "safree", "ant", "stereo")  # SLD steers sampling, FMN the concept's own attention, AdaVD
# every value, SAFREE the prompt, ANT the concept's own guidance, STEREO keeps its anchor prompts: no preserve set


def spec_for(method: str) -> EraseSpec:
    """SPEC, or for a method that takes no preserve set, its target alone."""
    return EraseSpec(("square",)) if method in NO_PRESERVE else SPEC


# One method per algorithm: the ESD variants share one erase() and differ only in which parameters
# train; esd-u stands for them, with the convolutions and time embedding the others leave alone
# (RACE is ESD's training with an attack inside: its own erase()).
ALGORITHMS = [
    "esd-u",
    "race",
    "mace",
    "realera",
    "rece",
    "uce",
    "speed",
    "ac",
    "sld",
    "spm",
    "doco",
    "advunlearn",
    "receler",
    "fmn",
    "adavd",
    "sdd",
    "salun",
    "gloce",
    "safree",
    "ant",
    "stereo",
]


def sd_methods() -> set[str]:
    """The registered methods that run on SD 1.x/2.x, the embedded model's family (EraseAnything is FLUX's only)."""
    from erasekit.methods import load_methods

    return {name for name, method in load_methods().items() if "sd" in method.families}
