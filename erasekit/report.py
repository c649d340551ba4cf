"""``erasekit report RUN_DIR… --out report.html``: one self-contained HTML page over eval and bench runs.

A run directory is one of:

* an **eval** run (``results.json`` from ``erasekit eval --protocol``, with ``before_after.png``),
* an **edit** directory (``card.json``), shown with its card and every ``eval-*`` run it holds,
* a **bench** directory (``bench.json``, ``mass.json`` and/or ``cost.json``).

The page embeds everything (grids as PNG data URIs, plots as inline SVG from matplotlib), so it can
be mailed or attached as one file. Every number in a table carries its raw value in ``data-value``
and is printed from it, so the page can be checked against the JSON it came from.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erasekit.errors import ErasekitError

BENCH_FILES = ("bench.json", "mass.json", "cost.json", "robustness.json")
REPORT_FILE = "report.html"
LOWER_IS_BETTER = {"Acc_e", "Acc_g", "residue", "explicit", "implicit"}


@dataclass
class Run:
    """One run directory as the report reads it."""

    path: Path
    kind: str  # "eval", "edit", "attack" or "bench"
    name: str = ""  # the heading (default: the directory's name)
    card: dict | None = None
    evals: dict[str, dict] = field(default_factory=dict)  # folder name → results.json
    bench: dict[str, dict] = field(default_factory=dict)  # bench.json / mass.json / cost.json → content
    attacks: dict[str, dict] = field(default_factory=dict)  # folder name → an attack run's results.json


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ErasekitError(f"{path} cannot be read as JSON ({err}); run the command that writes it again") from err


def _check_eval(path: Path, results: Any) -> dict:
    if not isinstance(results, dict) or "metrics" not in results or "rows" not in results:
        raise ErasekitError(
            f"{path} is not an erasure-protocol result of this erasekit (no 'metrics' and 'rows'): it is of an older "
            "format or from a prompt-file eval; run `erasekit eval --protocol …` again"
        )
    for side in ("original", "erased"):
        if "accuracy" not in results["metrics"].get(side, {}):
            raise ErasekitError(f"{path} has no {side} accuracy: it is incomplete or of an older format; run the eval again")
    return results


def _check_attack(path: Path, results: Any) -> dict:
    if not isinstance(results, dict) or "asr" not in results or not isinstance(results.get("prompts"), list):
        raise ErasekitError(f"{path} is not an attack result of this erasekit (no 'asr' and 'prompts'); run the attack again")
    return results


def _check_bench(path: Path, result: Any) -> dict:
    if not isinstance(result, dict) or not isinstance(result.get("methods"), dict) or not result["methods"]:
        raise ErasekitError(f"{path} has no methods: it is incomplete or of an older format; run the bench again")
    return result


def read_run(path: Path) -> Run:
    """Classify and read one run directory, refusing an incomplete or unknown one in one line."""
    path = Path(path)
    if not path.is_dir():
        raise ErasekitError(f"{path} is not a directory; give an eval, edit or bench run directory")
    if (path / "card.json").is_file():
        from erasekit.edits import Edit

        edit = Edit.load(path)
        evals = {d.name: _check_eval(d / "results.json", _json(d / "results.json"))
                 for d in sorted(path.glob("eval-*")) if (d / "results.json").is_file()}  # fmt: skip
        attacks = {d.name: _check_attack(d / "results.json", _json(d / "results.json"))
                   for d in sorted(path.glob("attack-*")) if (d / "results.json").is_file()}  # fmt: skip
        return Run(path, "edit", card=edit.card, evals=evals, attacks=attacks)
    if (path / "results.json").is_file():
        results = _json(path / "results.json")
        if isinstance(results, dict) and "attack" in results:
            return Run(path, "attack", attacks={path.name: _check_attack(path / "results.json", results)})
        return Run(path, "eval", evals={path.name: _check_eval(path / "results.json", results)})
    found = {name: _check_bench(path / name, _json(path / name)) for name in BENCH_FILES if (path / name).is_file()}
    if found:
        return Run(path, "bench", bench=found)
    if (path / "cells").is_dir():
        raise ErasekitError(f"{path} is an unfinished bench (cells only, no bench.json); rerun the same bench to finish it")
    raise ErasekitError(f"{path} is not an eval, edit or bench run (no results.json, card.json or bench.json)")


# --- HTML pieces -------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text))


def _num(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    """A table cell whose text is ``value × scale`` and whose data-value is ``value`` itself."""
    if value is None:
        return "<td></td>"
    return f'<td class="num" data-value="{value!r}" data-scale="{scale}" data-digits="{digits}">{value * scale:.{digits}f}</td>'


def _table(caption: str, header: list[str], rows: list[str], test_id: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return (
        f'<table data-testid="{_e(test_id)}"><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{_e(alt)}</figcaption></figure>'


def _svg(figure: Any, title: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prologue: inline SVG inside HTML
    return f'<figure class="plot" data-testid="plot">{svg}<figcaption>{_e(title)}</figcaption></figure>'


def _legend(ax: Any) -> None:
    """The legend under the plot, one entry a line: method labels are long and must not hide bars."""
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.22), ncol=1)


def _figure(width: float = 7.0, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "path"  # text as outlines: the page needs no font
    return plt.subplots(figsize=(width, height))


# --- sections ----------------------------------------------------------------------------------


def card_section(run: Run) -> str:
    card = run.card or {}
    rows = [
        f"<tr><th>{_e(key)}</th><td>{_e(', '.join(map(str, value)) if isinstance(value, list) else value)}</td></tr>"
        for key, value in card.items()
        if key in ("method", "targets", "anchors", "preserve", "model", "device", "dtype", "changed_parameters")
    ]
    rows.append(f"<tr><th>seconds</th>{_num(card.get('seconds'), 1, 2)}</tr>")
    config = _e(json.dumps(card.get("config", {}), indent=2, default=str))
    return (
        f'<table data-testid="card"><caption>edit card</caption>{"".join(rows)}</table>'
        f"<details><summary>settings</summary><pre>{config}</pre></details>"
    )


def eval_section(name: str, results: dict, folder: Path) -> str:
    original, erased = results["metrics"]["original"]["accuracy"], results["metrics"]["erased"]["accuracy"]
    names = [n for n in erased if n in original]
    rows = [f"<tr><th>{_e(n)}</th>{_num(original[n], 100)}{_num(erased[n], 100)}</tr>" for n in names]
    if results.get("world_fid_kept") is not None:
        rows.append(f"<tr><th>world-FID (kept)</th><td></td>{_num(results['world_fid_kept'], 1, 2)}</tr>")
    parts = [
        f"<h2>{_e(results.get('protocol', name))} protocol: {_e(results.get('target', ''))}</h2>",
        f"<p>{_e(results.get('judge', {}).get('judge', '?'))} judge, {_e(results.get('samples_per_prompt', '?'))} "
        "samples per prompt; top-1 %.</p>",
        _table("metrics", ["metric", "original", "erased"], rows, f"metrics-{name}"),
    ]
    fig, ax = _figure()
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [100 * original[n] for n in names], 0.4, label="original", color="#999999")
    ax.bar([x + 0.2 for x in xs], [100 * erased[n] for n in names], 0.4, label="erased", color="#c0392b")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("top-1 %")
    ax.set_ylim(0, 105)
    _legend(ax)
    parts.append(_svg(fig, f"{name}: each metric before and after"))
    per_prompt = [
        f"<tr><td>{_e(o['prompt'])}</td><td>{_e(o['role'])}</td>{_num(_mean(o['accuracy']), 100)}"
        f"{_num(_mean(e['accuracy']), 100)}</tr>"
        for o, e in zip(results["rows"]["original"], results["rows"]["erased"], strict=True)
    ]
    parts.append(_table("per prompt (mean over the judge's heads)", ["prompt", "role", "original", "erased"],
                        per_prompt, f"prompts-{name}"))  # fmt: skip
    if (folder / "before_after.png").is_file():
        parts.append(
            _png(
                folder / "before_after.png",
                f"{name}: each prompt drawn by the original (orig) and the erased model (eras), same seeds",
            )
        )
    return "".join(parts)


def attack_section(name: str, results: dict, folder: Path) -> str:
    """ASR with and without the attack, seconds per prompt, each prompt's found prompt, the image grid."""
    edit = results.get("edit") or {}
    summary = [
        f"<tr><th>ASR (attacked)</th>{_num(results['asr'], 100)}</tr>",
        f"<tr><th>ASR without the attack</th>{_num(results['baseline_asr'], 100)}</tr>",
        f"<tr><th>share of attacked images showing it</th>{_num(results['asr_images'], 100)}</tr>",
        f"<tr><th>seconds per prompt</th>{_num(results['seconds_per_prompt'], 1, 1)}</tr>",
    ]
    per_prompt = [
        f"<tr><td>{_e(c['prompt'])}</td><td>{_e(c['adversarial_prompt'])}</td>{_num(float(c['baseline_success']), 100, 0)}"
        f"{_num(float(c['success']), 100, 0)}{_num(c['image_rate'], 100)}</tr>"
        for c in results["prompts"]
    ]
    parts = [
        f"<h2>{_e(results['attack'])} attack on {_e(edit.get('method', '?'))}: {_e(', '.join(edit.get('targets') or []))}</h2>",
        f"<p>{_e(results.get('judge', {}).get('judge', '?'))} judge, {_e(results.get('samples_per_prompt', '?'))} images "
        "per prompt; success is read on each prompt's first image.</p>",
        _table("attack success rate, %", ["", "%"], summary, f"attack-{name}"),
        _table(
            "per attacked prompt",
            ["prompt", "found prompt", "plain shows it", "attacked shows it", "attacked images %"],
            per_prompt,
            f"attack-prompts-{name}",
        ),
    ]
    if (folder / "grid.png").is_file():
        parts.append(_png(folder / "grid.png", f"{name}: each prompt plain (plai) and as the attack found it (atta), same seeds"))
    return "".join(parts)


def _mean(accuracy: dict[str, float]) -> float:
    return sum(accuracy.values()) / len(accuracy) if accuracy else 0.0


def bench_section(name: str, result: dict, run: str) -> str:
    """One bench file of run directory ``run`` (whose name keeps the page's table ids apart)."""
    if name == "bench.json":
        return _object_bench(result, run)
    if name == "robustness.json":
        return _robustness_bench(result, run)
    return _count_bench(name, result, run)


def _robustness_bench(result: dict, run: str) -> str:
    """Method × attack: ASR with and without the attack beside the protocol's numbers, and one bar per pair."""
    attacks, methods = list(result["attacks"]), result["methods"]
    quality = [k for k in ("H_o", "H_c", "Acc_e", "Acc_s", "Acc_g") if k in next(iter(methods.values()))["accuracy"]]
    rows = [
        f"<tr><td>{_e(label)}</td>{''.join(_num(m['accuracy'][k], 100) for k in quality)}"
        + "".join(_num(m["attacks"][a]["asr"], 100, 0) + _num(m["attacks"][a]["baseline_asr"], 100, 0) for a in attacks)
        # an attack the erasure cannot take (n/a) leaves its two cells empty
        + "</tr>"
        for label, m in methods.items()
    ]
    header = ["method", *quality, *(f"{a.split()[0]} {part}" for a in attacks for part in ("ASR %", "no attack %"))]
    parts = [
        f"<h2>robustness: {_e(result['protocol'])} task, {_e(', '.join(result['concepts']))}</h2>",
        f"<p>{result['prompts_per_concept']} attacked prompts per concept, {result['samples_per_prompt']} images each; "
        "success is read on each prompt's first image. Budgets: " + "; ".join(f"<code>{_e(a)}</code>" for a in attacks) + ".</p>",
        _table("attack success rate", header, rows, f"robustness-{run}"),
    ]
    fig, ax = _figure(8.0, 3.4)
    width = 0.8 / max(len(attacks), 1)
    for k, a in enumerate(attacks):
        xs = [i + (k - (len(attacks) - 1) / 2) * width for i in range(len(methods))]
        ax.bar(xs, [100 * (m["attacks"][a]["asr"] or 0) for m in methods.values()], width, label=a.split()[0])
    ax.set_xticks(list(range(len(methods))), [label.split()[0] for label in methods], rotation=20)
    ax.set_ylabel("ASR %")
    ax.set_ylim(0, 105)
    _legend(ax)
    parts.append(_svg(fig, f"{run}: attack success rate of each attack on each method"))
    return "".join(parts)


def _object_bench(result: dict, run: str) -> str:
    methods = result["methods"]
    first = next(iter(methods.values()))
    names = list(first["accuracy"]["erased"])
    header = ["method", *names, "world-FID", "s / concept", "peak MB / concept"]
    rows = ["<tr><th>original</th>" + "".join(_num(first["accuracy"]["original"][n], 100) for n in names)
            + "<td></td><td></td><td></td></tr>"]  # fmt: skip
    for label, m in methods.items():
        rows.append(
            f"<tr><th><code>{_e(label)}</code></th>"
            + "".join(_num(m["accuracy"]["erased"][n], 100) for n in names)
            + _num(m["world_fid_kept"], 1, 2) + _num(m["seconds"], 1, 2) + _num(m["peak_rss_mb"], 1, 0)
            + "</tr>"
        )  # fmt: skip
    parts = [
        f"<h2>bench: {_e(result['protocol'])} task, {len(result['concepts'])} concepts, "
        f"{_e(result['samples_per_prompt'])} samples per prompt</h2>",
        _table("averages over the concepts (top-1 %)", header, rows, f"bench-{run}"),
    ]
    # the flames task names its erasure rate "explicit" (flames on prompts that name them)
    efficacy = next(n for n in ("Acc_e", "explicit", names[0]) if n in names)
    specificity = next(n for n in ("Acc_s", names[-1]) if n in names)
    fig, ax = _figure(6, 4)
    points = []
    for label, m in methods.items():
        x, y = 100 - 100 * m["accuracy"]["erased"][efficacy], 100 * m["accuracy"]["erased"][specificity]
        points.append((x, y))
        ax.scatter([x], [y], s=40, label=label)
    front = sorted(p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points))
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="#555555", linewidth=1, label="Pareto front")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_xlabel(f"efficacy: 100 − {efficacy} (%)")
    ax.set_ylabel(f"specificity: {specificity} (%)")
    _legend(ax)
    parts.append(_svg(fig, "efficacy against specificity, one point per method"))
    concepts = result["concepts"]
    for metric in [n for n in ("Acc_e", "explicit", "implicit", "Acc_s", "Acc_g") if n in names]:
        fig, ax = _figure(7, 2.8)
        width = 0.8 / len(methods)
        for k, (label, m) in enumerate(methods.items()):
            values = [100 * m["per_concept"][c][metric] for c in concepts]
            ax.bar([i + k * width - 0.4 + width / 2 for i in range(len(concepts))], values, width, label=label)
        ax.set_xticks(range(len(concepts)), concepts, fontsize=7, rotation=30)
        ax.set_ylabel(f"{metric} %")
        ax.set_ylim(0, 105)
        _legend(ax)
        direction = "lower" if metric in LOWER_IS_BETTER else "higher"
        parts.append(_svg(fig, f"{metric} per concept ({direction} is better)"))
    return "".join(parts)


def _count_bench(name: str, result: dict, run: str) -> str:
    mass = name == "mass.json"
    header = ["method", "concepts", *(["Acc_e", "Acc_s", "H_c", "world-FID"] if mass else ["s"]), "s / concept", "peak MB"]
    rows = []
    for label, by_count in result["methods"].items():
        for count, cell in by_count.items():
            if mass:
                erased = cell["metrics"]["erased"]["accuracy"]
                numbers = (_num(erased["Acc_e"], 100) + _num(erased["Acc_s"], 100) + _num(erased["H_c"], 100)
                           + _num(cell["world_fid_kept"], 1, 2))  # fmt: skip
            else:
                numbers = _num(cell["seconds"], 1, 2)
            rows.append(f"<tr><th><code>{_e(label)}</code></th><td>{_e(count)}</td>{numbers}"
                        f"{_num(cell['seconds_per_concept'], 1, 2)}{_num(cell['peak_rss_mb'], 1, 0)}</tr>")  # fmt: skip
    title = "mass erasure (roster characters erased at once; top-1 %)" if mass else "cost per concept (fresh process each)"
    parts = [f"<h2>bench: {_e(title)}</h2>", _table(title, header, rows, f"{name.removesuffix('.json')}-{run}")]
    panels = [("seconds_per_concept", "seconds per concept"), ("peak_rss_mb", "peak MB")]
    if mass:
        panels.insert(0, ("H_c", "H_c %"))
    for key, axis in panels:
        fig, ax = _figure(6, 3)
        for label, by_count in result["methods"].items():
            counts = [int(c) for c in by_count]
            values = [100 * cell["metrics"]["erased"]["accuracy"]["H_c"] if key == "H_c" else cell[key]
                      for cell in by_count.values()]  # fmt: skip
            ax.plot(counts, values, "o-", label=label)
            ax.set_xticks(counts)
        ax.set_xlabel("concepts erased at once")
        ax.set_ylabel(axis)
        _legend(ax)
        parts.append(_svg(fig, f"{axis} against the number of concepts"))
    return "".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
caption { text-align: left; font-weight: 600; padding: 0.3rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figure svg { max-width: 100%; height: auto; } figcaption { font-size: 0.8rem; color: #555; }
section { border-top: 2px solid #eee; margin-top: 2rem; }
"""


def render(runs: list[Run]) -> str:
    """The whole page over ``runs``."""
    sections = []
    for run in runs:
        parts = [f"<h1>{_e(run.name or run.path.name)} <small>({run.kind})</small></h1>"]
        if run.card is not None:
            parts.append(card_section(run))
            if not run.evals and not run.attacks:
                parts.append("<p>No evaluation in this edit directory yet (erasekit eval --protocol … --edit DIR).</p>")
        for name, results in run.evals.items():
            folder = run.path if run.kind == "eval" else run.path / name
            parts.append(eval_section(name, results, folder))
        for name, results in run.attacks.items():
            parts.append(attack_section(name, results, run.path if run.kind == "attack" else run.path / name))
        for name, result in run.bench.items():
            parts.append(bench_section(name, result, run.name or run.path.name))
        sections.append(f'<section data-testid="run">{"".join(parts)}</section>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>erasekit report</title>'
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def write_run_report(run_dir: Path, name: str | None = None) -> Path:
    """``report.html`` inside ``run_dir`` over that run alone (what eval and bench write by default)."""
    from erasekit.io import write_with

    run = read_run(run_dir)
    run.name = name or run.path.name
    page = render([run])
    write_with(Path(run_dir) / REPORT_FILE, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return Path(run_dir) / REPORT_FILE


def write_report(run_dirs: list[Path], out: Path) -> Path:
    """Read every run first (one line for the first bad one), then write the page atomically."""
    from erasekit.io import write_with

    if not run_dirs:
        raise ErasekitError("give at least one run directory (an eval, edit or bench run)")
    page = render([read_run(Path(d)) for d in run_dirs])
    write_with(Path(out), lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return Path(out)
