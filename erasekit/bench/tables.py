"""The markdown tables of bench results: one renderer per kind of result.

``erasekit bench`` prints these and writes them beside its JSON (``bench.md``, ``mass.md``,
``cost.md``, ``robustness.md``); ``scripts/doc_tables.py`` regenerates the README's and docs/'
tables from the committed JSON with :func:`any_table`, so a table there is always its JSON's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from erasekit.errors import ErasekitError


def markdown_table(result: dict) -> str:
    """The bench summary as a markdown table: top-1 % / mean class probability %, then cost per concept."""
    first = next(iter(result["methods"].values()))
    names = list(first["accuracy"]["erased"])
    header = ["method", *names, "world-FID", "s / concept", "peak MB / concept", f"all {len(result['concepts'])} at once"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]

    def cells(m: dict, which: str) -> list[str]:
        return [f"{100 * m['accuracy'][which][n]:.1f} / {100 * m['probability'][which][n]:.1f}" for n in names]

    lines.append("| original | " + " | ".join(cells(first, "original")) + " | | | | |")
    for label, m in result["methods"].items():
        once = m["all_at_once"]
        lines.append(
            f"| `{label}` | "
            + " | ".join(cells(m, "erased"))
            + f" | {m['world_fid_kept']:.2f} | {m['seconds']:.2f} | {m['peak_rss_mb']:.0f} | "
            + (f"{once['seconds']:.1f} s |" if once else "not timed |")
        )
    return "\n".join(lines) + "\n"


def mass_table(result: dict) -> str:
    """Acc_e / Acc_s / H_c (top-1 %) and cost per concept at each count, one row per method and count."""
    lines = ["| method | concepts | Acc_e | Acc_s | H_c | world-FID | s / concept | peak MB |", "|" + " --- |" * 8]
    for label, by_count in result["methods"].items():
        for count, cell in by_count.items():
            erased, original = cell["metrics"]["erased"]["accuracy"], cell["metrics"]["original"]["accuracy"]
            shown = f"{count} ({cell['synthetic']} synthetic)" if cell.get("synthetic") else f"{count}"
            lines.append(
                f"| `{label}` | {shown} | {100 * erased['Acc_e']:.1f} (was {100 * original['Acc_e']:.1f}) | "
                f"{100 * erased['Acc_s']:.1f} | {100 * erased['H_c']:.1f} | {cell['world_fid_kept']:.2f} | "
                f"{cell['seconds_per_concept']:.2f} | {cell['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def cost_table(result: dict) -> str:
    """One row per method and count: seconds and peak MB, in all and per concept."""
    lines = ["| method | concepts | s | s / concept | peak MB | peak MB / concept |", "|" + " --- |" * 6]
    for label, by_count in result["methods"].items():
        for count, cell in by_count.items():
            lines.append(
                f"| `{label}` | {count} | {cell['seconds']:.2f} | {cell['seconds_per_concept']:.2f} | "
                f"{cell['peak_rss_mb']:.0f} | {cell['peak_rss_mb_per_concept']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def robustness_table(result: dict) -> str:
    """Method × attack: the protocol's harmonic mean and Acc_e, then each attack's ASR % (without the attack %)."""
    attacks = list(result["attacks"])
    first = next(iter(result["methods"].values()))["accuracy"]
    quality = [k for k in ("H_o", "H_c", "Acc_e", "Acc_s", "Acc_g", "explicit", "implicit") if k in first]
    header = ["method", *quality, *(a.split()[0] for a in attacks), "attack s / prompt", "erase s", "erase peak MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, m in result["methods"].items():
        cells = [f"{100 * m['accuracy'][k]:.1f}" for k in quality]
        cells += [_asr_cell(m["attacks"][a]) for a in attacks]
        seconds = np.mean([m["attacks"][a]["seconds_per_prompt"] for a in attacks if m["attacks"][a]["asr"] is not None])
        lines.append(f"| `{label}` | " + " | ".join(cells) + f" | {seconds:.1f} | {m['seconds']:.1f} | {m['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _asr_cell(outcome: dict) -> str:
    """``ASR (ASR without the attack)``; where plain prompts already succeed, also the found prompts' own rate,
    which on the unedited model is the attack's reach within its budget."""
    if outcome["asr"] is None:
        return "n/a"
    asr, plain, found = (round(100 * outcome[k]) for k in ("asr", "baseline_asr", "asr_found"))
    return f"{asr} ({plain}; found {found})" if plain and found != asr else f"{asr} ({plain})"


SWEEP_METRICS = ("Acc_e", "Acc_s", "Acc_g", "residue")


def _short_settings(settings: str) -> str:
    """A sweep row's settings as written, its preserve list (``_preserve``) shown as a count."""
    return re.sub(r'"_preserve": \[([^\]]*)\]', lambda m: f'"_preserve": "{m[1].count(",") + 1} classes"', settings)


def sweep_table(jsonl: str) -> str:
    """A committed sweep (the JSON lines ``scripts/sweeps/sweep.py`` appends) as one markdown row per
    method and settings, its metrics averaged over the concepts it ran on."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for line in jsonl.splitlines():
        if line.strip():
            row = json.loads(line)
            groups.setdefault((row["method"], row["settings"], row["samples"]), []).append(row)
    lines = ["| method | settings | concepts | samples | " + " | ".join(SWEEP_METRICS) + " | world-FID | s / concept |",
             "| --- " * (len(SWEEP_METRICS) + 6) + "|"]  # fmt: skip
    for (method, settings, samples), group in groups.items():
        mean = {k: 100 * sum(r["accuracy"][k] for r in group) / len(group) for k in SWEEP_METRICS}
        fid = sum(r["world_fid_kept"] for r in group) / len(group)
        seconds = sum(r["seconds"] for r in group) / len(group)
        concepts = ", ".join(r["concept"] for r in group)
        cells = " | ".join(f"{mean[k]:.1f}" for k in SWEEP_METRICS)
        shown = _short_settings(settings).replace("|", "\\|")
        lines.append(f"| {method} | `{shown}` | {concepts} | {samples} | {cells} | {fid:.2f} | {seconds:.0f} |")
    return "\n".join(lines) + "\n"


def scale_table(result: dict) -> str:
    """``scripts/scale_bench.py``'s runs: wall seconds, speed-up over the first run, same metrics or not."""
    runs = list(result["wall_seconds"].items())
    lines = ["| run | wall s | speed-up | metrics |", "| --- | --- | --- | --- |"]
    for name, seconds in runs:
        compared = [f"{'same as' if equal else 'differ from'} {pair.split(' vs ')[1]}"
                    for pair, equal in result["same_metrics"].items() if pair.split(" vs ")[0] == name]  # fmt: skip
        lines.append(f"| {name} | {seconds:.1f} | {runs[0][1] / seconds:.2f}× | {'; '.join(compared)} |")
    return "\n".join(lines) + "\n"


def startup_table(result: dict) -> str:
    """The command line's answer times (``scripts/startup_bench.py``) as a markdown table."""
    lines = ["| command | median s | slowest s | runs |", "| --- | --- | --- | --- |"]
    lines += [
        f"| `{r['command']}` | {r['median_seconds']:.2f} | {r['max_seconds']:.2f} | {r['runs']} |" for r in result["commands"]
    ]
    return "\n".join(lines) + f"\n\n{result['machine']}; `{result['command']}`\n"


def sampling_table(result: dict) -> str:
    """Seconds per image with each kind of edit in place (``scripts/sampling_bench.py``) as a markdown table."""
    lines = ["| edit | s / image | overhead |", "| --- | --- | --- |"]
    lines += [f"| `{r['edit']}` | {r['median_seconds_per_image']:.3f} | {100 * r['overhead']:+.0f} % |" for r in result["rows"]]
    setting = f"{result['images_per_round']} images of {result['steps']} steps per round, median of {result['rows'][0]['rounds']}"
    return "\n".join(lines) + f"\n\n{result['model']}, {setting}; {result['machine']}; `{result['command']}`\n"


def merged(results: list[dict], names: list[str]) -> dict:
    """Bench results of one task (bench.json, mass.json or cost.json files) as one, methods in order."""
    first = results[0]
    keys = ("protocol", "concepts", "samples_per_prompt") if "protocol" in first else ("task", "samples_per_prompt")
    for name, other in zip(names[1:], results[1:], strict=True):
        for key in keys:
            if other.get(key) != first.get(key):
                raise ErasekitError(f"{name}: {key} {other.get(key)!r} differs from {names[0]}'s {first.get(key)!r}")
    return {**first, "methods": {label: m for r in results for label, m in r["methods"].items()}}


def any_table(paths: list[Path]) -> str:
    """The markdown table of committed bench JSON (object-style, mass, cost, robustness, scale, startup or sampling runs;
    several files of one task merged in order) or of one sweep (.jsonl)."""
    if len(paths) == 1 and paths[0].suffix == ".jsonl":
        return sweep_table(paths[0].read_text())
    if len(paths) == 1 and "wall_seconds" in (single := json.loads(paths[0].read_text())):
        return scale_table(single)
    if len(paths) == 1 and single.get("task") in ("startup", "sampling"):
        return startup_table(single) if single["task"] == "startup" else sampling_table(single)
    results = [json.loads(p.read_text()) for p in paths]
    if len({r.get("model", "erasekit-tiny") for r in results if "protocol" in r}) > 1:
        return models_table(results)
    return summary_table(merged(results, [str(p) for p in paths]))


def models_table(results: list[dict]) -> str:
    """Object-style bench results of several models side by side: per model its original and every
    method, top-1 %, world-FID on the kept classes and seconds per concept (the cost on that model)."""
    names = list(next(iter(results[0]["methods"].values()))["accuracy"]["erased"])
    header = ["model", "method", *names, "world-FID", "s / concept"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in results:
        model = result.get("model", "erasekit-tiny")
        first = next(iter(result["methods"].values()))
        lines.append(f"| {model} | original | " + " | ".join(f"{100 * first['accuracy']['original'][n]:.1f}" for n in names)
                     + " | | |")  # fmt: skip
        for label, m in result["methods"].items():
            values = " | ".join(f"{100 * m['accuracy']['erased'][n]:.1f}" for n in names)
            lines.append(f"| {model} | `{label}` | {values} | {m['world_fid_kept']:.2f} | {m['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def summary_table(result: dict) -> str:
    """The table of one bench summary: what bench.json, mass.json, cost.json or robustness.json holds."""
    if result.get("task") == "robustness":
        return robustness_table(result)
    if "protocol" in result:
        return markdown_table(result)
    return mass_table(result) if result["task"] == "mass character erasure" else cost_table(result)
