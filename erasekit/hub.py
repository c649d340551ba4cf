"""A hub page for an edit: the model card (``README.md``) and ``erasekit push DIR --repo-id …``.

The card says what a person fetching the model needs before using it: which concepts were erased,
onto which anchors, what was preserved, by which method with which settings, on which base model,
and how well, with the numbers of every protocol run on the edit (the ``eval-*`` folders its
directory holds, as ``results.json`` wrote them) and their before/after grids. It is built from
files only, so it is tested offline; pushing uploads the edit directory, the card and a kohya LoRA
with ``huggingface_hub`` and needs a network and a token.

The header is ``huggingface_hub``'s :class:`ModelCardData` (written by ``yaml.dump``, which quotes
every value, so no string of the edit can add a key), and every string of the edit that goes into
the Markdown body passes :func:`md`, so a concept cannot add a heading, a link, HTML or a table cell.
The card carries :data:`CARD_MARK`, by which ``write_card`` tells its own README.md from the user's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

from erasekit.edits import CARD_FILE, Edit
from erasekit.errors import ErasekitError
from erasekit.eval.metrics import METRICS
from erasekit.eval.protocols import read_results, result_protocol
from erasekit.eval.protocols.results import NUMBER, JsonFields
from erasekit.models.provenance import README, base_model, md

KOHYA_FILE = "erased_kohya.safetensors"
# the line after the header by which a README.md is known to be erasekit's (an HTML comment: not shown on the hub)
CARD_MARK = "<!-- erasekit model card: `erasekit push --card-only` rewrites this file; delete this line to keep your edits -->"
# the header line of the cards erasekit wrote before CARD_MARK, so that they are still known as its own
_OLD_CARD_TAGS = "\ntags: [erasekit, concept-erasure, stable-diffusion, lora]\n---\n"
UNKNOWN_LICENSE = "other"


def _tag(value: str) -> str:
    """A hub tag from a method name: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or "unknown"


# --- reading card.json and results.json with their types checked ---------------------------------------


def eval_results(edit_dir: Path, kind: str = "eval") -> dict[str, dict]:
    """``{folder: results.json}`` of the runs of ``kind`` kept in ``edit_dir``: evaluations (eval-object, …)
    or attacks (attack-unlearndiff, …)."""
    found = {}
    what = "evaluation" if kind == "eval" else kind
    for path in sorted(Path(edit_dir).glob(f"{kind}-*/results.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except (ValueError, OSError) as err:
            raise ErasekitError(f"{path} is not valid JSON ({err}); run the {what} again") from err
        if not isinstance(found[path.parent.name], dict):
            raise ErasekitError(f"{path} is not the results of an {what} (not a JSON object); run the {what} again")
    return found


# --- the card ----------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _legend(names: list[str]) -> list[str]:
    known = [f"{name}: {METRICS[name].meaning}" for name in names if name in METRICS]
    return ["", md("; ".join(known)) + " (top-1 accuracy, %)."] if known else []


def metrics_table(results: dict, path: Path | None = None) -> list[str]:
    """Markdown rows of one protocol's ``results.json``, original → erased, each metric with its direction."""
    result = read_results(results, path or Path("results.json"))
    rows = result_protocol(result.protocol).card_rows(result)
    lines = ["| metric | original | erased | better |", "| --- | --- | --- | --- |"]
    for row in rows:  # a metric of the two models together has no original value: its cell is blank
        original = " |" if row.original is None else f" {row.original} |"
        lines.append(f"| {md(row.label)} |{original} {row.erased} | {row.better} |")
    return lines + _legend([row.metric for row in rows if row.metric])


def _attack_rows(attacks: dict[str, dict], edit_dir: Path) -> list[str]:
    rows = []
    for folder, result in attacks.items():
        r = JsonFields(result, Path(edit_dir) / folder / "results.json", "run the attack again")
        budget = json.dumps(r.get("config", kind=(dict, list, str, *NUMBER), default={}), default=str, sort_keys=True)
        asr, plain = r.get("asr", kind=NUMBER), r.get("baseline_asr", kind=NUMBER)
        rows.append(
            f"| {md(r.get('attack', kind=str))} {md(budget)} | {_pct(asr)} | {_pct(plain)} | {len(r.get('prompts', kind=list))} |"
        )
    return rows


def _settings_block(config: object) -> list[str]:
    # json.dumps escapes newlines and starts every line with a space or a bracket, so no string of the
    # config can close the fence; the hub escapes HTML inside a code block
    return ["```json", json.dumps(config, indent=2, default=str, sort_keys=False), "```"]


def _render(card: dict, edit_dir: Path, lora_file: str | None) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    c = JsonFields(card, Path(edit_dir) / CARD_FILE, "erase again to write a new card")
    targets, anchors = c.strings("targets"), c.strings("anchors", nulls=True)
    preserve = c.strings("preserve")
    method = c.get("method", kind=str, default="unknown")
    base = base_model(c.get("model", kind=str, default=None))
    seconds, peak = c.get("seconds", kind=NUMBER, default=0), c.get("peak_rss_mb", kind=NUMBER, default=0)
    changed = c.get("changed_parameters", kind=int, default=0)
    version, dtype, device, base_hash = (
        c.get(k, kind=str, default=d)
        for k, d in (("erasekit_version", ""), ("dtype", "float32"), ("device", "cpu"), ("base_hash", "none"))
    )
    config = c.get("config", kind=(dict, list, str, *NUMBER), default={})
    tags = ["erasekit", "concept-erasure", _tag(method), "stable-diffusion", "text-to-image", *(["lora"] if lora_file else [])]
    data = ModelCardData(
        base_model=base.hub_id,  # a hub id only: a local path means nothing on the hub (the body names the model)
        library_name="diffusers",
        license=base.license or UNKNOWN_LICENSE,
        pipeline_tag="text-to-image",
        tags=tags,
    )
    if base.hub_id:
        named = f"[{md(base.name)}](https://huggingface.co/{quote(base.hub_id)})"
    elif base.embedded:
        named = f"{md(base.name)}, the model embedded in erasekit"
    else:
        named = f"{md(base.name)}, a local model (not on the hub)"
    if base.license is None:
        license_line = (
            f"License: erasekit cannot tell the license of {md(base.name)}; this edit is derived from it, so its terms apply "
            "(the header says `other`: put the base model's license there)."
        )
    else:
        license_line = f"License: {md(base.license)}" + (", erasekit's own." if base.embedded else ", the base model's.")
    lines = [
        f"# {md(base.name)} with {', '.join(map(md, targets))} erased",
        "",
        f"Erased by erasekit {md(version)} with **{md(method)}** from {named} ({md(dtype)}, {md(device)}).",
        "",
        license_line,
        "",
        "| erased | anchor |",
        "| --- | --- |",
        *[
            f"| {md(t)} | {md(a) if a else '(the empty prompt)'} |"
            for t, a in zip(targets, anchors or [""] * len(targets), strict=False)
        ],
        "",
        f"Preserved: {', '.join(map(md, preserve)) if preserve else 'no preserve set'}.",
        "",
        "## Settings",
        "",
        *_settings_block(config),
        "",
        f"{changed} UNet tensors changed; the erasure took {seconds:.1f} s (peak +{peak:.0f} MB). "
        f"Base-model hash of the changed tensors: {md(base_hash)}.",
        "",
        "## How well",
        "",
    ]
    results = eval_results(edit_dir)
    if not results:
        lines += ["Not evaluated yet: `erasekit eval --edit DIR --protocol …` adds its numbers here.", ""]
    for folder, result in results.items():
        r = JsonFields(result, Path(edit_dir) / folder / "results.json", "run the evaluation again")
        judge = (r.get("judge", kind=dict, default={}) or {}).get("judge", "?")
        samples = r.get("samples_per_prompt", kind=int, default="?")
        lines += [
            f"### {md(r.get('protocol', kind=str, default=folder))} protocol ({md(judge)} judge, {samples} samples per prompt)",
            "",
            *metrics_table(result, r.path),
            "",
        ]
        if (Path(edit_dir) / folder / "before_after.png").is_file():
            lines += [f"![before and after, {md(folder)}]({quote(folder)}/before_after.png)", ""]
    attacks = eval_results(edit_dir, "attack")
    if attacks:
        lines += [
            "## Under attack",
            "",
            "| attack and budget | ASR % | without the attack % | prompts |",
            "| --- | --- | --- | --- |",
            *_attack_rows(attacks, edit_dir),
            "",
            "ASR: the share of attacked prompts whose image shows the erased concept (erasekit attack); lower is better.",
            "",
        ]
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
        lines.append(f"Without erasekit: `pipe.load_lora_weights('.', weight_name='{quote(lora_file)}')` in diffusers.")
    else:
        lines.append("Other formats: `erasekit export DIR --format kohya|diffusers-lora|single-file`.")
    body = "\n".join([CARD_MARK, "", *lines]) + "\n"
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def model_card(edit_dir: Path, lora_file: str | None = None) -> str:
    """The hub page of the edit in ``edit_dir`` as Markdown with the hub's YAML header; ``lora_file``:
    the LoRA uploaded beside it (a kohya file, or diffusers' own), if any. A card.json or results.json
    with a missing key or a wrong type is one ErasekitError naming the file."""
    return _render(Edit.load(edit_dir).card, Path(edit_dir), lora_file)


def written_by_erasekit(path: Path) -> bool:
    """Whether the file at ``path`` is a card erasekit wrote (never following a link)."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(1 << 16)  # the mark sits right below the header
    return CARD_MARK in head or (head.startswith("---\nlibrary_name: diffusers\n") and _OLD_CARD_TAGS in head[:400])


# --- writing and pushing -------------------------------------------------------------------------------


def symlinks(root: Path) -> list[Path]:
    """The symbolic links under ``root`` (not followed), relative to it."""
    found = []
    for folder, dirs, files in os.walk(root):  # os.walk lists a linked folder among dirs but does not enter it
        found += [Path(folder, n).relative_to(root) for n in (*dirs, *files) if Path(folder, n).is_symlink()]
    return sorted(found)


def _refuse_links(root: Path, edit_dir: Path) -> None:
    links = symlinks(root)
    if links:
        raise ErasekitError(
            f"cannot push: {Path(edit_dir) / links[0]} is a symbolic link"
            + (f" ({len(links) - 1} more)" if len(links) > 1 else "")
            + "; push uploads no linked file, so replace it with the file itself or remove it"
        )


def push(edit_dir: Path, repo_id: str, private: bool = False, model: str | None = None, overwrite: bool = False) -> str:
    """Upload the edit, its card and a kohya LoRA to ``repo_id``; the repository's URL.

    Symbolic links in the edit directory are refused before anything else: uploading follows them,
    which would publish whatever file they point to."""
    from huggingface_hub import HfApi, get_token

    from erasekit.edits.lora import NotLoraable
    from erasekit.exports import export_edit

    _refuse_bad_repo_id(repo_id)  # before the export, which takes a while on a real model
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ErasekitError("cannot push: HF_HUB_OFFLINE is set (no network); `erasekit push --card-only` writes the card")
    edit = Edit.load(edit_dir)  # refuses a damaged edit before anything is uploaded
    _refuse_links(Path(edit_dir), Path(edit_dir))
    _refuse_users_readme(Path(edit_dir) / README, overwrite)  # the hub page would replace it
    _render(edit.card, Path(edit_dir), None)  # a card.json or results.json the card cannot read: before the export
    lora = edit.card.get("lora")
    if lora is not None and not (isinstance(lora, dict) and isinstance(lora.get("file"), str)):
        raise ErasekitError(f"{Path(edit_dir) / CARD_FILE}: lora should be an object with its file; erase again")
    token = get_token()
    if token is None:
        raise ErasekitError("cannot push: no Hugging Face token; run `hf auth login` or set HF_TOKEN")
    staging = Path(tempfile.mkdtemp(prefix=".erasekit-push-"))
    try:
        # links are copied as links and refused again: one made after the check above is not followed either
        shutil.copytree(edit_dir, staging / "edit", symlinks=True, dirs_exist_ok=True)
        _refuse_links(staging / "edit", Path(edit_dir))
        lora_file = None
        if edit.weights and not lora:  # an edit saved with --lora already has diffusers' file
            try:
                export_edit(edit_dir, "kohya", staging / "edit" / KOHYA_FILE, model)
                lora_file = KOHYA_FILE
            except NotLoraable:  # biases or norm layers: no kohya file, the edit itself still goes up
                lora_file = None
        elif lora:
            lora_file = lora["file"]
        (staging / "edit" / README).write_text(_render(edit.card, Path(edit_dir), lora_file))
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


def _refuse_users_readme(path: Path, overwrite: bool) -> None:
    """A README.md that erasekit did not write is the user's: replaced (here or on the hub) only with ``overwrite``."""
    if (path.exists() or path.is_symlink()) and not overwrite and not written_by_erasekit(path):
        raise ErasekitError(f"{path} exists and was not written by erasekit; pass --overwrite to replace it")


def _refuse_bad_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ErasekitError(
            f"--repo-id {repo_id[:100]!r} is not a hub repository id (OWNER/NAME): {str(err).splitlines()[0]}"
        ) from None
    if "/" not in repo_id:
        raise ErasekitError(f"--repo-id {repo_id!r} needs its owner: OWNER/NAME")


def write_card(edit_dir: Path, overwrite: bool = False) -> Path:
    """Write the card as ``README.md`` into ``edit_dir`` (atomically) and return its path. A README.md
    that erasekit did not write (no :data:`CARD_MARK`) is replaced only with ``overwrite``."""
    from erasekit.io import write_with

    path = Path(edit_dir) / README
    _refuse_users_readme(path, overwrite)
    if path.is_dir() and not path.is_symlink():
        raise ErasekitError(f"{path} is a directory; move it away to write the card")
    text = model_card(edit_dir)
    write_with(path, lambda tmp: Path(tmp).write_text(text))
    return path
