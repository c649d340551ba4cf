"""erasekit against the official scripts, side by side on the embedded model (issue 18).

    python scripts/side_by_side.py --uce-repo PATH/unified-concept-editing --esd-repo PATH/erasing \
        --out runs/side-by-side

The official repositories are checkouts the caller fetched (rohitgandikota/unified-concept-editing,
rohitgandikota/erasing); nothing of them is copied into erasekit. For each method, both tools erase
the same concept with the same settings:

* **UCE**: ``trainscripts/uce_sd_erase.py`` runs unchanged as a command (``--model_id`` the embedded
  model, ``--device cpu``), and its ``UCE()`` function is also called in this process, warm, for
  the edit time; erasekit runs ``erasekit erase`` and ``erase()`` the same two ways.
* **ESD**: ``esd_sd.py`` hard-codes SD-1.4, bf16 and 1024 px, so it runs from a temporary copy with
  those three lines pointed at the embedded model (fp32, its own resolution), its ``random`` seeded,
  and a timer around its training loop; each replacement must match exactly once, so a changed
  script stops this rather than running something else.

Both edits are judged by the same code (``run_protocol``, the object protocol, same seeds), and the
table gives edit seconds, whole-command seconds, Acc_e/Acc_s/Acc_g/H_o, world-FID and the weight
difference ‖A − B‖ / ‖A − W₀‖ (A erasekit, B official). ``side_by_side.json`` keeps every figure;
``--table FILE`` prints the table of one written before (the README's is ``bench/side-by-side.json``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit, base_hash
from erasekit.eval.protocols import run_protocol
from erasekit.methods.runner import erase
from erasekit.models.embedded import EMBEDDED_DIR, ensure_text_encoder
from erasekit.models.loading import load_pipeline


def timed_command(command: list[str], cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{command[0]} {command[1]} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def as_edit(pipe: DiffusionPipeline, weights: dict[str, torch.Tensor], card: dict) -> Edit:
    """An official script's saved weights as an erasekit edit of ``pipe`` (only the tensors it changed)."""
    params = dict(pipe.unet.named_parameters())
    changed = {n: w.float() for n, w in weights.items() if not torch.equal(w.float(), params[n].detach().float())}
    return Edit(changed, {**card, "base_hash": base_hash(pipe, list(changed))})


def weight_difference(pipe: DiffusionPipeline, ours: Edit, theirs: Edit) -> float:
    params = dict(pipe.unet.named_parameters())
    names = sorted(set(ours.weights) | set(theirs.weights))

    def value(edit: Edit, name: str) -> torch.Tensor:
        return edit.weights.get(name, params[name].detach()).double()

    diff = sum(float((value(ours, n) - value(theirs, n)).norm() ** 2) for n in names) ** 0.5
    change = sum(float((value(ours, n) - params[n].detach().double()).norm() ** 2) for n in names) ** 0.5
    return diff / change


def judged(pipe: DiffusionPipeline, edit: Edit, target: str, samples: int, original_cache: dict) -> dict:
    result = run_protocol(pipe, edit, "object", target, samples=samples, progress=False, original_cache=original_cache)
    metrics = result.metrics["erased"]["accuracy"]
    return {**{k: round(100 * metrics[k], 1) for k in ("Acc_e", "Acc_s", "Acc_g", "H_o")}, "world_fid": result.world_fid_kept}


def uce_side_by_side(args: Namespace, pipe: DiffusionPipeline, model_dir: Path, work: Path) -> list[dict]:
    script = args.uce_repo / "trainscripts" / "uce_sd_erase.py"
    preserve = args.preserve.split(",") if args.preserve else []
    # the official command, as a user runs it
    official_cmd = [sys.executable, str(script), "--edit_concepts", args.concept, "--concept_type", "object",
                    "--model_id", str(model_dir), "--device", "cpu", "--save_dir", str(work), "--exp_name", "uce"]  # fmt: skip
    if preserve:
        official_cmd += ["--preserve_concepts", ";".join(preserve)]
    official_total, log = timed_command(official_cmd)
    official_edit_s = float(re.search(r"Model edited in ([0-9.]+) seconds", log).group(1))
    theirs = as_edit(pipe, load_file(str(work / "uce.safetensors")), {"method": "uce (official uce_sd_erase.py)"})
    ours_cmd = ["erasekit", "erase", args.concept, "--model", str(model_dir), "--out", str(work / "erasekit-uce")]
    if preserve:
        ours_cmd += ["--preserve", ",".join(preserve)]
    ours_total, _ = timed_command(ours_cmd)
    ours = Edit.load(work / "erasekit-uce")

    # warm edit times in this process, best of five: the official UCE() function against erasekit's erase()
    sys.path.insert(0, str(script.parent))
    import uce_sd_erase

    torch.set_grad_enabled(True)  # the module switches gradients off for the whole process on import
    uce_sd_erase.device, uce_sd_erase.torch_dtype = "cpu", torch.float32  # the globals its __main__ sets
    spec = EraseSpec((args.concept,), preserve=tuple(preserve))
    official_s, ours_s = [], []
    for _ in range(5):
        start = time.perf_counter()
        with torch.no_grad():
            uce_sd_erase.UCE(pipe, [args.concept], [""], preserve, 1.0, 1.0, 0.5, str(work), "uce-warm")
        official_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        erase(pipe, spec, "uce", progress=False)
        ours_s.append(time.perf_counter() - start)
    cache: dict = {}
    return [
        {"method": "UCE", "tool": "official uce_sd_erase.py", "edit_s": min(official_s), "edit_s_cold": official_edit_s,
         "command_s": official_total, "weight_difference": 0.0, **judged(pipe, theirs, args.concept, args.samples, cache)},
        {"method": "UCE", "tool": "erasekit (defaults)", "edit_s": min(ours_s), "edit_s_cold": ours.card["seconds"],
         "command_s": ours_total, "weight_difference": weight_difference(pipe, ours, theirs),
         **judged(pipe, ours, args.concept, args.samples, cache)},
    ]  # fmt: skip


ESD_PATCHES = (  # (official line, replacement): the embedded model, fp32 on CPU, its resolution, a seed, a timer
    ('= load_sd_models(basemodel_id="CompVis/stable-diffusion-v1-4"', "= load_sd_models(basemodel_id={model!r}"),
    ("torch_dtype = torch.bfloat16", "torch_dtype = torch.float32"),
    ("height=width=1024", "height=width={resolution}"),
    ("criteria = torch.nn.MSELoss()", "criteria = torch.nn.MSELoss(); random.seed({seed}); import time as _t"),
    (
        "pbar = tqdm(range(iterations), desc='Training ESD')",
        "_t0 = _t.perf_counter(); pbar = tqdm(range(iterations), desc='Training ESD')",
    ),
    ("esd_param_dict = {}", "print(f'ESD trained in {{_t.perf_counter() - _t0}} seconds'); esd_param_dict = {{}}"),
)


def patched_esd_script(repo: Path, into: Path, model: Path, resolution: int, seed: int) -> Path:
    shutil.copytree(repo / "utils", into / "utils")
    text = (repo / "esd_sd.py").read_text()
    for old, new in ESD_PATCHES:
        if text.count(old) != 1:
            sys.exit(f"esd_sd.py has changed: {old!r} occurs {text.count(old)} times, not once; update ESD_PATCHES")
        text = text.replace(old, new.format(model=str(model), resolution=resolution, seed=seed))
    (into / "esd_sd.py").write_text(text)
    return into / "esd_sd.py"


def esd_side_by_side(args: Namespace, pipe: DiffusionPipeline, model_dir: Path, work: Path) -> list[dict]:
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows, cache = [], {}
    for seed in args.seeds:
        run_dir = work / f"esd-official-{seed}"
        run_dir.mkdir()
        script = patched_esd_script(args.esd_repo, run_dir, model_dir, resolution, seed)
        official_total, log = timed_command(
            [sys.executable, script.name, "--erase_concept", args.concept, "--train_method", "esd-x",
             "--lr", str(args.esd_lr), "--device", "cpu", "--save_path", "out"], cwd=run_dir)  # fmt: skip
        official_edit_s = float(re.search(r"ESD trained in ([0-9.]+) seconds", log).group(1))
        saved = next((run_dir / "out").glob("*.safetensors"))
        theirs = as_edit(pipe, load_file(str(saved)), {"method": "esd-x (official esd_sd.py)"})
        out = work / f"erasekit-esd-{seed}"
        ours_total, _ = timed_command(["erasekit", "erase", args.concept, "--model", str(model_dir), "--method", "esd-x",
                                       "--set", f"lr={args.esd_lr}", "--set", f"seed={seed}", "--out", str(out)])  # fmt: skip
        ours = Edit.load(out)
        rows += [
            {"method": "ESD-x", "seed": seed, "tool": "official esd_sd.py", "edit_s": official_edit_s, "command_s": official_total,
             "weight_difference": 0.0, **judged(pipe, theirs, args.concept, args.samples, cache)},
            {"method": "ESD-x", "seed": seed, "tool": "erasekit (defaults)", "edit_s": ours.card["seconds"], "command_s": ours_total,
             "weight_difference": weight_difference(pipe, ours, theirs), **judged(pipe, ours, args.concept, args.samples, cache)},
        ]  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| method | seed | tool | edit s | command s | Acc_e | Acc_s | Acc_g | H_o | world-FID | ‖A−B‖/‖A−W₀‖ |"
    lines = [head, "|" + " --- |" * 11]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r.get('seed', '')} | {r['tool']} | {r['edit_s']:.3f} | {r['command_s']:.1f} | {r['Acc_e']} | "
            f"{r['Acc_s']} | {r['Acc_g']} | {r['H_o']} | {r['world_fid']:.2f} | {r['weight_difference']:.2g} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uce-repo", type=Path, help="a checkout of rohitgandikota/unified-concept-editing")
    parser.add_argument("--esd-repo", type=Path, help="a checkout of rohitgandikota/erasing")
    parser.add_argument("--concept", default="square")
    parser.add_argument("--preserve", default="circle,triangle,star,heart,cross,crescent,arrow,diamond,hexagon",
                        help="comma-separated preserve concepts for UCE ('' for none)")  # fmt: skip
    parser.add_argument("--esd-lr", type=float, default=5e-4, help="both ESDs' lr (the official 5e-5 does not erase here)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/side-by-side"))
    parser.add_argument("--table", type=Path, help="only print the table of a side_by_side.json written before")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text())["rows"]))
        return
    if args.out.exists():
        sys.exit(f"{args.out} exists; choose another --out")
    model_dir = ensure_text_encoder(EMBEDDED_DIR)
    pipe = load_pipeline(model_dir)
    if args.esd_repo:  # a changed official script stops the run before anything is measured
        with tempfile.TemporaryDirectory() as tmp:
            patched_esd_script(args.esd_repo, Path(tmp), model_dir, 0, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.uce_repo:
            (Path(tmp) / "uce").mkdir()
            rows += uce_side_by_side(args, pipe, model_dir, Path(tmp) / "uce")
        if args.esd_repo:
            rows += esd_side_by_side(args, pipe, model_dir, Path(tmp))
    table = markdown(rows)
    args.out.mkdir(parents=True)
    (args.out / "side_by_side.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                             "rows": rows}, indent=2) + "\n")  # fmt: skip
    (args.out / "side_by_side.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
