"""Do two checkouts of erasekit make the same edits? Erase "square" (preserving circle and heart) with
each method that trains or solves at small settings (SLD, a sampling configuration, has no tensors), with the erasekit found in SOURCE_DIR, and save every edit to OUT.

    python scripts/sweeps/compare_edits.py OLD_CHECKOUT /tmp/old.safetensors
    python scripts/sweeps/compare_edits.py . /tmp/new.safetensors
    python scripts/sweeps/compare_edits.py --diff /tmp/old.safetensors /tmp/new.safetensors

Behind the README's statement that the device/dtype rework left every CPU edit bit-identical.
"""

import sys

if sys.argv[1] == "--diff":
    from safetensors.torch import load_file

    old, new = load_file(sys.argv[2]), load_file(sys.argv[3])
    worst: dict[str, float] = {}
    for name in old:
        method = name.split("/")[0]
        worst[method] = max(worst.get(method, 0.0), float((old[name].double() - new[name].double()).abs().max()))
    print(f"{len(old)} / {len(new)} tensors; largest difference per method: {worst}")
    sys.exit(0)

sys.path.insert(0, sys.argv[1])  # the checkout under test comes before the installed erasekit
from safetensors.torch import save_file

try:
    from erasekit.concepts import EraseSpec
except ImportError:  # a checkout from before EraseSpec moved below the methods
    from erasekit.methods.base import EraseSpec
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline

pipe = load_pipeline()
spec = EraseSpec(("square",), preserve=("circle", "heart"))
TEMPLATES = ("{}", "a photo of a {}", "a picture of a {}")
SETTINGS = {
    "uce": {"templates": TEMPLATES},
    "esd-x": {"iterations": 20, "sample_steps": 10, "lr": 5e-4},
    "mace": {"lam": 10, "lr": 3e-3, "steps": 20},
    "realera": {"epochs": 10, "m": 16, "sample_steps": 10},
    "rece": {"epochs": 2, "validation_samples": 2, "sample_steps": 5},
    "esd-u": {"iterations": 5, "sample_steps": 10},
    "esd-all": {"iterations": 5, "sample_steps": 10},
    "esd-x-strict": {"iterations": 10, "sample_steps": 10},
    "race": {"iterations": 5, "esd_iterations": 5, "pgd_steps": 3, "sample_steps": 10},
    "advunlearn": {"iterations": 5, "warmup_iterations": 2, "attack_steps": 3, "sample_steps": 10},
    "receler": {"iterations": 5, "adversarial_steps": 3, "sample_steps": 10},
    "ac": {"anchor_images": 4, "steps": 10, "sample_steps": 10},
    "doco": {"anchor_images": 4, "steps": 10, "warm_up": 4, "sample_steps": 10, "batch_size": 2},
    "spm": {"iterations": 10, "sample_steps": 10, "warmup_steps": 2},
}
edits = {}
for method, settings in SETTINGS.items():
    edit = erase(pipe, spec, method, progress=False, **settings)
    edits |= {f"{method}/{name}": value.contiguous() for name, value in edit.weights.items()}
    edits |= {f"{method}/adapters/{name}": value.contiguous() for name, value in edit.adapters.items()}
save_file(edits, sys.argv[2])
print(f"wrote {len(edits)} tensors to {sys.argv[2]}")
