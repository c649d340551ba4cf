"""A hub page for an edit: the model card (``README.md``) and ``erasekit push DIR --repo-id …``.

The card says what a person fetching the model needs before using it: which concepts were erased,
onto which anchors, what was preserved, by which method with which settings, on which base model,
and how well, with the numbers of every protocol run on the edit (the ``eval-*`` folders its
directory holds, as ``results.json`` wrote them) and their before/after grids. It is built from
files only, so it is tested offline; pushing uploads the edit directory, the card and a kohya LoRA
with ``huggingface_hub`` and needs a network and a token.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from erasekit.edits import Edit
from erasekit.errors import ErasekitError

README = "README.md"
KOHYA_FILE = "erased_kohya.safetensors"


def eval_results(edit_dir: Path, kind: str = "eval") -> dict[str, dict]:
    """``{folder: results.json}`` of the runs of ``kind`` kept in ``edit_dir``: evaluations (eval-object, …)
    or attacks (attack-unlearndiff, …)."""
    found = {}
    for path in sorted(Path(edit_dir).glob(f"{kind}-*/results.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except ValueError as err:
            what = "evaluation" if kind == "eval" else kind
            raise ErasekitError(f"{path} is not valid JSON ({err}); run the {what} again") from err
    return found


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def metrics_table(results: dict) -> list[str]:
    """Markdown rows: each top-1 metric of the protocol, original → erased."""
    original, erased = results["metrics"]["original"]["accuracy"], results["metrics"]["erased"]["accuracy"]
    rows = ["| metric | original | erased |", "| --- | --- | --- |"]
    rows += [f"| {name} | {_pct(original[name])} | {_pct(erased[name])} |" for name in erased if name in original]
    if results.get("world_fid_kept") is not None:
        rows.append(f"| world-FID (kept prompts) | | {results['world_fid_kept']:.2f} |")
    return rows


def model_card(edit_dir: Path, lora_file: str | None = None) -> str:
    """The hub page of the edit in ``edit_dir`` as Markdown with the hub's YAML header; ``lora_file``:
    the LoRA uploaded beside it (a kohya file, or diffusers' own), if any."""
    card = Edit.load(edit_dir).card
    targets, anchors, preserve = card["targets"], card.get("anchors") or [], card.get("preserve") or []
    base = card.get("model") or "erasekit-tiny"
    on_hub = base.count("/") == 1 and not Path(base).exists()  # a hub id, not a local path
    header = [
        "---",
        "library_name: diffusers",
        *([f"base_model: {base}"] if on_hub else []),
        "tags: [erasekit, concept-erasure, stable-diffusion, lora]",
        "---",
    ]
    lines = [
        f"# {base} with {', '.join(targets)} erased",
        "",
        f"Erased by erasekit {card.get('erasekit_version', '')} with **{card.get('method')}**"
        f" on `{base}` ({card.get('dtype', 'float32')}, {card.get('device', 'cpu')}).",
        "",
        "| erased | anchor |",
        "| --- | --- |",
        *[f"| {t} | {a or '(the empty prompt)'} |" for t, a in zip(targets, anchors or [""] * len(targets), strict=False)],
        "",
        f"Preserved: {', '.join(preserve) if preserve else 'no preserve set'}.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(card.get("config", {}), indent=2, default=str),
        "```",
        "",
        f"{card.get('changed_parameters', 0)} UNet tensors changed; the erasure took {card.get('seconds', 0):.1f} s "
        f"(peak +{card.get('peak_rss_mb', 0):.0f} MB). Base-model hash of the changed tensors: `{card.get('base_hash')}`.",
        "",
        "## How well",
        "",
    ]
    results = eval_results(edit_dir)
    if not results:
        lines += ["Not evaluated yet: `erasekit eval --edit DIR --protocol …` adds its numbers here.", ""]
    for folder, result in results.items():
        judge = result.get("judge", {})
        lines += [
            f"### {result.get('protocol', folder)} protocol ({judge.get('judge', '?')} judge, "
            f"{result.get('samples_per_prompt', '?')} samples per prompt)",
            "",
            *metrics_table(result),
            "",
        ]
        if (Path(edit_dir) / folder / "before_after.png").is_file():
            lines += [f"![before and after, {folder}]({folder}/before_after.png)", ""]
    attacks = eval_results(edit_dir, "attack")
    if attacks:
        lines += [
            "## Under attack",
            "",
            "| attack and budget | ASR % | without the attack % | prompts |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['attack']} `{json.dumps(r['config'])}` | {_pct(r['asr'])} | {_pct(r['baseline_asr'])} | {len(r['prompts'])} |"
            for r in attacks.values()
        ]
        lines += ["", "ASR: the share of attacked prompts whose image shows the erased concept (erasekit attack).", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from erasekit.edits import load_erased",
        "pipe = load_erased('.')  # the base model with the edit, its hash checked",
        "```",
        "",
    ]
    if lora_file == KOHYA_FILE:
        lines.append(
            f"Without erasekit: `pipe.load_lora_weights('.', weight_name='{KOHYA_FILE}')` in diffusers, or "
            f"`{KOHYA_FILE}` in AUTOMATIC1111 / ComfyUI's LoRA folder at strength 1."
        )
    elif lora_file:
        lines.append(f"Without erasekit: `pipe.load_lora_weights('.', weight_name='{lora_file}')` in diffusers.")
    else:
        lines.append("Other formats: `erasekit export DIR --format kohya|diffusers-lora|single-file`.")
    return "\n".join([*header, "", *lines]) + "\n"


def push(edit_dir: Path, repo_id: str, private: bool = False, model: str | None = None) -> str:
    """Upload the edit, its card and a kohya LoRA to ``repo_id``; the repository's URL."""
    from huggingface_hub import HfApi, get_token

    from erasekit.exports import export_edit
    from erasekit.lora import NotLoraable

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ErasekitError("cannot push: HF_HUB_OFFLINE is set (no network); `erasekit push --card-only` writes the card")
    token = get_token()
    if token is None:
        raise ErasekitError("cannot push: no Hugging Face token; run `hf auth login` or set HF_TOKEN")
    edit = Edit.load(edit_dir)  # refuses a damaged edit before anything is uploaded
    staging = Path(tempfile.mkdtemp(prefix=".erasekit-push-"))
    try:
        shutil.copytree(edit_dir, staging / "edit", dirs_exist_ok=True)
        lora_file = None
        if edit.weights and not edit.card.get("lora"):  # an edit saved with --lora already has diffusers' file
            try:
                export_edit(edit_dir, "kohya", staging / "edit" / KOHYA_FILE, model)
                lora_file = KOHYA_FILE
            except NotLoraable:  # biases or norm layers: no kohya file, the edit itself still goes up
                lora_file = None
        elif edit.card.get("lora"):
            lora_file = edit.card["lora"]["file"]
        (staging / "edit" / README).write_text(model_card(edit_dir, lora_file))
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=staging / "edit", commit_message="erasekit edit")
        except Exception as err:  # the hub's HTTP errors and the HTTP client's own (no network, DNS, TLS)
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ErasekitError(f"could not push to {repo_id}: {first}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(url)


def write_card(edit_dir: Path) -> Path:
    """Write the card as ``README.md`` into ``edit_dir`` (atomically) and return its path."""
    from erasekit.io import write_with

    path = Path(edit_dir) / README
    text = model_card(edit_dir)
    write_with(path, lambda tmp: Path(tmp).write_text(text))
    return path
