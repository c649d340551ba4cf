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
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from erasekit.eval.metrics import Metric
    from erasekit.eval.protocols import ProtocolResult

BENCH_FILES = ("bench.json", "mass.json", "cost.json", "robustness.json")
REPORT_FILE = "report.html"
LABELS = {"world_fid_kept": "world-FID"}  # a result field's name as the page prints it

# What each section reads from its file, checked before any page is drawn so that a damaged or
# hand-edited file is one line naming it. A spec is a type (or tuple of types) the value must be;
# {key: spec} an object with those keys ("key?": optional); {str: spec} an object of any keys whose
# values all match spec; [spec] a list of them. Strings only where they are keys or joined.
NUM = (int, float)
NUM_OR_NULL = (int, float, type(None))
ANY = object
_ACCURACY = {str: NUM}
EVAL_SPEC = {
    "protocol": ANY,
    "metrics": {"original": {"accuracy": _ACCURACY}, "erased": {"accuracy": _ACCURACY}},
    "rows": {side: [{"prompt": ANY, "role": ANY, "accuracy": _ACCURACY}] for side in ("original", "erased")},
    "world_fid_kept?": NUM_OR_NULL,
    "judge?": {"judge?": ANY},
}
ATTACK_SPEC = {
    "attack": ANY,
    **{key: NUM for key in ("asr", "baseline_asr", "asr_images", "seconds_per_prompt")},
    "prompts": [{"prompt": ANY, "adversarial_prompt": ANY, "baseline_success": NUM, "success": NUM, "image_rate": NUM}],
    "edit?": (dict, type(None)),
    "judge?": {"judge?": ANY},
}
BENCH_SPECS = {
    "bench.json": {
        "protocol": ANY,
        "concepts": [str],
        "samples_per_prompt": ANY,
        "methods": {
            str: {
                "accuracy": {"original": _ACCURACY, "erased": _ACCURACY},
                "world_fid_kept": NUM_OR_NULL,
                "seconds": NUM,
                "peak_rss_mb": NUM,
                "per_concept": {str: _ACCURACY},
            }
        },
    },
    "mass.json": {
        "methods": {
            str: {
                str: {
                    "metrics": {"erased": {"accuracy": {"Acc_e": NUM, "Acc_s": NUM, "H_c": NUM}}},
                    "world_fid_kept": NUM_OR_NULL,
                    "seconds_per_concept": NUM,
                    "peak_rss_mb": NUM,
                }
            }
        }
    },
    "cost.json": {"methods": {str: {str: {"seconds": NUM, "seconds_per_concept": NUM, "peak_rss_mb": NUM}}}},
    "robustness.json": {
        "protocol": ANY,
        "concepts": [str],
        "prompts_per_concept": ANY,
        "samples_per_prompt": ANY,
        "attacks": {str: ANY},
        "methods": {str: {"accuracy": _ACCURACY, "attacks": {str: {"asr": NUM_OR_NULL, "baseline_asr": NUM_OR_NULL}}}},
    },
}
CARD_SPEC = {"seconds?": NUM_OR_NULL, "targets?": [ANY]}


def _json_kind(value: Any) -> str:
    """``value``'s kind as JSON names it, for the one-line message."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    kinds = ((str, "a string"), ((int, float), "a number"), (list, "a list"), (dict, "an object"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _mismatch(value: Any, spec: Any, where: str = "") -> str | None:
    """Where ``value`` departs from ``spec`` (see EVAL_SPEC), as a line; None where it does not."""
    here = where or "the file"
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{here} is {_json_kind(value)} where an object is expected"
        if str in spec:
            found = (_mismatch(v, spec[str], f"{where}.{k}" if where else k) for k, v in value.items())
            return next((m for m in found if m), None)
        for key, sub in spec.items():
            name = key.removesuffix("?")
            path = f"{where}.{name}" if where else name
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{path} is missing"
            if problem := _mismatch(value[name], sub, path):
                return problem
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{here} is {_json_kind(value)} where a list is expected"
        return next((m for i, v in enumerate(value) if (m := _mismatch(v, spec[0], f"{where}[{i}]"))), None)
    if not isinstance(value, spec):
        wanted = {NUM: "a number", NUM_OR_NULL: "a number or null", str: "a string", (dict, type(None)): "an object or null",
                  (list, type(None)): "a list or null"}.get(spec, "something else")  # fmt: skip
        return f"{here} is {_json_kind(value)} where {wanted} is expected"
    return None


def _conform(path: Path, value: Any, spec: Any, where: str = "") -> None:
    if problem := _mismatch(value, spec, where):
        problem = problem.replace("\n", "\\n")  # a key from the file may hold a line break: the message stays one line
        raise ErasekitError(
            f"{path}: {problem}; the file is damaged or of another erasekit, run the command that writes it again"
        )


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A key or type the checks above cannot see (one field naming another that is not there) while
    drawing ``path``'s section: one line naming the file, not a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, StopIteration, ZeroDivisionError) as err:
        detail = (str(err).strip().splitlines() or [""])[0]
        raise ErasekitError(
            f"{path}: a field is missing or of the wrong type ({type(err).__name__}: {detail}); the file is damaged or of "
            "another erasekit, run the command that writes it again"
        ) from None


@dataclass
class Run:
    """One run directory as the report reads it."""

    path: Path
    kind: str  # "eval", "edit", "attack" or "bench"
    name: str = ""  # the heading (default: the directory's name)
    card: dict | None = None
    evals: dict[str, ProtocolResult] = field(default_factory=dict)  # folder name → results.json
    bench: dict[str, dict] = field(default_factory=dict)  # bench.json / mass.json / cost.json → content
    attacks: dict[str, dict] = field(default_factory=dict)  # folder name → an attack run's results.json


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ErasekitError(f"{path} cannot be read as JSON ({err}); run the command that writes it again") from err


def _check_eval(path: Path, results: Any) -> ProtocolResult:
    if not isinstance(results, dict) or "metrics" not in results or "rows" not in results:
        raise ErasekitError(
            f"{path} is not an erasure-protocol result of this erasekit (no 'metrics' and 'rows'): it is of an older "
            "format or from a prompt-file eval; run `erasekit eval --protocol …` again"
        )
    for side in ("original", "erased"):
        metrics = results["metrics"].get(side) if isinstance(results["metrics"], dict) else None
        if not isinstance(metrics, dict) or "accuracy" not in metrics:
            raise ErasekitError(f"{path} has no {side} accuracy: it is incomplete or of an older format; run the eval again")
    _conform(path, results, EVAL_SPEC)
    if len(results["rows"]["original"]) != len(results["rows"]["erased"]):
        raise ErasekitError(f"{path} has {len(results['rows']['original'])} original rows but "
                            f"{len(results['rows']['erased'])} erased ones; run the eval again")  # fmt: skip
    result = _protocol_result(results)
    with _reading(path):  # the verdict reads the protocol's own metrics: the page shows it, so it must be there
        _verdict(result)
    return result


def _check_attack(path: Path, results: Any) -> dict:
    if not isinstance(results, dict) or "asr" not in results or not isinstance(results.get("prompts"), list):
        raise ErasekitError(f"{path} is not an attack result of this erasekit (no 'asr' and 'prompts'); run the attack again")
    _conform(path, results, ATTACK_SPEC)
    _conform(path, results.get("edit") or {}, {"targets?": (list, type(None))}, "edit")  # joined into the heading
    return results


def _check_bench(path: Path, result: Any) -> dict:
    if not isinstance(result, dict) or not isinstance(result.get("methods"), dict) or not result["methods"]:
        raise ErasekitError(f"{path} has no methods: it is incomplete or of an older format; run the bench again")
    _conform(path, result, BENCH_SPECS[path.name])
    if path.name in ("mass.json", "cost.json"):
        for label, by_count in result["methods"].items():
            if bad := next((c for c in by_count if not c.isdigit()), None):
                raise ErasekitError(f"{path}: methods.{label} has {bad!r} where a number of concepts is expected; "
                                    "run the bench again")  # fmt: skip
    return result


def _protocol_result(results: dict) -> ProtocolResult:
    from erasekit.eval.protocols import ProtocolResult  # heavy imports, only when a run is read

    return ProtocolResult.from_json(results)


def _verdict(result: ProtocolResult) -> str:
    from erasekit.eval.protocols import verdict  # the line `erasekit eval` prints

    return verdict(result)


def read_run(path: Path) -> Run:
    """Classify and read one run directory, refusing an incomplete or unknown one in one line."""
    path = Path(path)
    if not path.is_dir():
        raise ErasekitError(f"{path} is not a directory; give an eval, edit or bench run directory")
    if (path / "card.json").is_file():
        from erasekit.edits import Edit

        edit = Edit.load(path)
        _conform(path / "card.json", edit.card, CARD_SPEC)
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
    """``text`` as HTML text or a quoted attribute value: every string from a file or a path goes through here."""
    return html.escape(str(text))


def _num(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    """A table cell whose text is ``value × scale`` and whose data-value is ``value`` itself."""
    if value is None:
        return "<td></td>"
    if not isinstance(value, int | float):  # never a string's repr inside the attribute; _reading names the file
        raise TypeError(f"{value!r} is not a number")
    return f'<td class="num" data-value="{value!r}" data-scale="{scale}" data-digits="{digits}">{value * scale:.{digits}f}</td>'


def _table(caption: str, header: list[str], rows: list[str], test_id: str) -> str:
    """A table in a box of its own that scrolls sideways, so a wide one never widens a phone's page."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return (
        f'<div class="scroll"><table data-testid="{_e(test_id)}"><caption>{_e(caption)}</caption><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _metric(name: str) -> Metric | None:
    """What a protocol metric measures and which way is better, from the one definition the CLI reads too."""
    from erasekit.eval.metrics import METRICS  # torch-heavy module: imported when a page is drawn

    return METRICS.get(name)


def _arrow(name: str, label: str | None = None) -> str:
    """``name`` (shown as ``label``) with ↓ (lower is better) or ↑ (higher is better) for a table header or a
    plot's axis."""
    known = _metric(name)
    return f"{label or name}\u00a0{known.arrow}" if known else label or name  # no-break space: one line


def _metric_key(names: list[str]) -> str:
    """What each metric of a table measures and which way is better, one line each under the table."""
    items = [f"<li><b>{_e(LABELS.get(n, n))}</b> {m.arrow} {_e(m.meaning)}: {m.better} is better</li>"
             for n in dict.fromkeys(names) if (m := _metric(n))]  # fmt: skip
    return f'<ul class="key" data-testid="metric-key">{"".join(items)}</ul>' if items else ""


def _png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{_e(alt)}</figcaption></figure>'


def _svg(figure: Any, title: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    # no date in the metadata: the same runs give the same page
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prologue: inline SVG inside HTML
    return f'<figure class="plot" data-testid="plot">{svg}<figcaption>{_e(title)}</figcaption></figure>'


def _legend(ax: Any, above: bool = False) -> None:
    """The legend at 9 pt right under the plot (``above``: in a row over it, for two short entries), never over
    the data; under rather than beside, so that a phone's screen gives the plot its whole width. Long method
    labels are wrapped and laid out in as many columns as the figure's width takes."""
    handles, labels = ax.get_legend_handles_labels()
    labels = [textwrap.fill(label, 32) for label in labels]
    fig = ax.figure
    columns = len(labels) if above else max(1, min(len(labels), int(fig.get_figwidth() / 2.4)))
    lines = -(-len(labels) // columns) * max((label.count("\n") + 1 for label in labels), default=1)
    fig.set_figheight(fig.get_figheight() + 0.18 * lines + 0.1)  # room for the legend: the plot keeps its height
    # "outside …" places it beyond the tick labels and axis labels (constrained layout, see _figure)
    fig.legend(handles, labels, loc="outside upper right" if above else "outside lower left", ncol=columns,
               frameon=False, fontsize=9)  # fmt: skip


def _figure(width: float = 7.0, height: float = 3.2, grid: str = "y") -> tuple[Any, Any]:
    """A figure and its axes with light gridlines (``grid``: "y", "x" or "both") behind the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "path"  # text as outlines: the page needs no font
    plt.rcParams["text.parse_math"] = False  # a label with "$" in it is text, not mathtext (which can fail to parse)
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    ax.grid(True, axis=grid, color="#e3e3e3", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


# --- sections ----------------------------------------------------------------------------------


def card_section(run: Run) -> str:
    """HTML of an edit's card: its main fields and time, and its settings in a collapsed block."""
    card = run.card or {}
    rows = [
        f"<tr><th>{_e(key)}</th><td>{_e(', '.join(map(str, value)) if isinstance(value, list) else value)}</td></tr>"
        for key, value in card.items()
        if key in ("method", "targets", "anchors", "preserve", "model", "device", "dtype", "changed_parameters")
    ]
    rows.append(f"<tr><th>seconds</th>{_num(card.get('seconds'), 1, 2)}</tr>")
    config = _e(json.dumps(card.get("config", {}), indent=2, default=str))
    return (
        f'<div class="scroll"><table data-testid="card"><caption>edit card</caption>{"".join(rows)}</table></div>'
        f"<details><summary>settings</summary><pre>{config}</pre></details>"
    )


def eval_section(name: str, result: ProtocolResult, folder: Path) -> str:
    """HTML of an eval run: verdict, metrics table and bar chart (original against erased), per-prompt table,
    and the before/after grid when there is one."""
    original, erased = result.metrics["original"]["accuracy"], result.metrics["erased"]["accuracy"]
    names = [n for n in erased if n in original]

    def meaning(metric: str) -> str:  # one column, so that a phone's table wraps words rather than letters
        what, direction = _metric(metric) or ("", "")
        return f"<td><b>{direction} is better</b>: {_e(what)}</td>" if direction else "<td></td>"

    rows = [f"<tr><th>{_e(n)}</th>{_num(original[n], 100)}{_num(erased[n], 100)}{meaning(n)}</tr>" for n in names]
    if result.world_fid_kept is not None:
        fid = _num(result.world_fid_kept, 1, 2)
        rows.append(f"<tr><th>world-FID (kept)</th><td></td>{fid}{meaning('world_fid_kept')}</tr>")
    parts = [
        f"<h2>{_e(result.protocol)} protocol: {_e(result.target)}</h2>",
        f'<p class="verdict" data-testid="verdict">{_e(_verdict(result))}</p>',
        f"<p>{_e((result.judge or {}).get('judge', '?'))} judge, {_e(_or_unknown(result.samples_per_prompt))} "
        "samples per prompt; top-1 %.</p>",
        _table("metrics", ["metric", "original", "erased", "meaning"], rows, f"metrics-{name}"),
    ]
    fig, ax = _figure()
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [100 * original[n] for n in names], 0.4, label="original", color="#999999")
    ax.bar([x + 0.2 for x in xs], [100 * erased[n] for n in names], 0.4, label="erased", color="#c0392b")
    ax.set_xticks(list(xs), [_arrow(n) for n in names])
    ax.set_ylabel("top-1 %")
    ax.set_ylim(0, 105)
    _legend(ax, above=True)
    parts.append(_svg(fig, f"{name}: each metric before and after (↓ lower is better, ↑ higher is better)"))
    per_prompt = [
        f"<tr><td>{_e(o['prompt'])}</td><td>{_e(o['role'])}</td>{_num(_mean(o['accuracy']), 100)}"
        f"{_num(_mean(e['accuracy']), 100)}</tr>"
        for o, e in zip(result.rows["original"], result.rows["erased"], strict=True)
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


def _or_unknown(value: object) -> object:
    return "?" if value is None else value


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
    targets = ", ".join(map(str, edit.get("targets") or []))
    parts = [
        f"<h2>{_e(results['attack'])} attack on {_e(edit.get('method', '?'))}: {_e(targets)}</h2>",
        f"<p>{_e(results.get('judge', {}).get('judge', '?'))} judge, {_e(results.get('samples_per_prompt', '?'))} images "
        "per prompt; success is read on each prompt's first image. A lower attack success rate is a more robust erasure.</p>",
        _table("attack success rate, % (lower is better)", ["", "%"], summary, f"attack-{name}"),
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
    header = ["method", *map(_arrow, quality),
              *(f"{a.split()[0] if a.split() else a} {part}" for a in attacks for part in ("ASR\u00a0%\u00a0↓", "no attack %"))]  # fmt: skip
    parts = [
        f"<h2>robustness: {_e(result['protocol'])} task, {_e(', '.join(result['concepts']))}</h2>",
        f"<p>{_e(result['prompts_per_concept'])} attacked prompts per concept, {_e(result['samples_per_prompt'])} images "
        "each; success is read on each prompt's first image; a lower attack success rate (ASR) is a more robust erasure. "
        "Budgets: " + "; ".join(f"<code>{_e(a)}</code>" for a in attacks) + ".</p>",
        _table("attack success rate", header, rows, f"robustness-{run}"),
        _metric_key(quality),
    ]
    fig, ax = _figure(8.0, 3.4)
    width = 0.8 / max(len(attacks), 1)
    for k, a in enumerate(attacks):
        xs = [i + (k - (len(attacks) - 1) / 2) * width for i in range(len(methods))]
        ax.bar(xs, [100 * (m["attacks"][a]["asr"] or 0) for m in methods.values()], width, label=a.split()[0] if a.split() else a)
    ax.set_xticks(list(range(len(methods))), [label.split()[0] if label.split() else label for label in methods], rotation=20)
    ax.set_ylabel("ASR % (lower is better)")
    ax.set_ylim(0, 105)
    _legend(ax)
    parts.append(_svg(fig, f"{run}: attack success rate of each attack on each method (lower is better)"))
    return "".join(parts)


def _object_bench(result: dict, run: str) -> str:
    methods = result["methods"]
    first = next(iter(methods.values()))
    names = list(first["accuracy"]["erased"])
    header = ["method", *map(_arrow, names), _arrow("world_fid_kept", "world\u2011FID"), "s / concept", "peak MB / concept"]
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
        _metric_key([*names, "world_fid_kept"]),
    ]
    # the flames task names its erasure rate "explicit" (flames on prompts that name them)
    efficacy = next(n for n in ("Acc_e", "explicit", names[0]) if n in names)
    specificity = next(n for n in ("Acc_s", names[-1]) if n in names)
    fig, ax = _figure(5, 4, grid="both")
    points = []
    for label, m in methods.items():
        x, y = 100 - 100 * m["accuracy"]["erased"][efficacy], 100 * m["accuracy"]["erased"][specificity]
        points.append((x, y))
        # clip_on=False: a method at a corner (100 % / 100 %, the best place) is drawn whole, not cut by the frame
        ax.scatter([x], [y], s=40, label=label, clip_on=False, zorder=3)
    front = sorted(p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points))
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="#555555", linewidth=1, label="Pareto front",
            clip_on=False)  # fmt: skip
    ax.set_xlim(-5, 105)
    ax.set_ylim(-5, 105)
    ax.set_xlabel(f"efficacy: 100 − {efficacy} (%), higher is better")
    ax.set_ylabel(f"specificity: {specificity} (%), higher is better")
    _legend(ax)
    parts.append(_svg(fig, "efficacy against specificity, one point per method (best: top right)"))
    concepts = result["concepts"]
    for metric in [n for n in ("Acc_e", "explicit", "implicit", "Acc_s", "Acc_g") if n in names]:
        fig, ax = _figure(7, 2.8)
        width = 0.8 / len(methods)
        for k, (label, m) in enumerate(methods.items()):
            values = [100 * m["per_concept"][c][metric] for c in concepts]
            ax.bar([i + k * width - 0.4 + width / 2 for i in range(len(concepts))], values, width, label=label)
        ax.set_xticks(range(len(concepts)), concepts, fontsize=9, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_ylabel(f"{_arrow(metric)} %")
        ax.set_ylim(0, 105)
        _legend(ax)
        direction = known.better if (known := _metric(metric)) else "higher"
        parts.append(_svg(fig, f"{metric} per concept ({direction} is better)"))
    return "".join(parts)


def _count_bench(name: str, result: dict, run: str) -> str:
    mass = name == "mass.json"
    measured = [*map(_arrow, ("Acc_e", "Acc_s", "H_c")), _arrow("world_fid_kept", "world\u2011FID")] if mass else ["s"]
    header = ["method", "concepts", *measured, "s / concept", "peak MB"]
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
    if mass:
        parts.append(_metric_key(["Acc_e", "Acc_s", "H_c", "world_fid_kept"]))
    panels = [("seconds_per_concept", "seconds per concept ↓"), ("peak_rss_mb", "peak MB ↓")]
    if mass:
        panels.insert(0, ("H_c", "H_c % ↑"))
    for key, axis in panels:
        fig, ax = _figure(6, 3, grid="both")
        for label, by_count in result["methods"].items():
            counts = [int(c) for c in by_count]
            values = [100 * cell["metrics"]["erased"]["accuracy"]["H_c"] if key == "H_c" else cell[key]
                      for cell in by_count.values()]  # fmt: skip
            ax.plot(counts, values, "o-", label=label, clip_on=False)
            ax.set_xticks(counts)
        ax.set_xlabel("concepts erased at once")
        ax.set_ylabel(axis)
        _legend(ax)
        parts.append(_svg(fig, f"{axis.rstrip(' ↓↑')} against the number of concepts"))
    return "".join(parts)


# One column on a phone: the page never scrolls sideways; a wide table scrolls inside its own box
STYLE = """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1rem 1.5rem; max-width: 1200px; color: #222;
       line-height: 1.4; -webkit-text-size-adjust: 100%; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 1.5rem; }
h1, h2, p, li, caption, figcaption { overflow-wrap: anywhere; }
th, td { overflow-wrap: break-word; }  /* not anywhere: a cell keeps its words whole */
.scroll { overflow-x: auto; max-width: 100%; margin: 1rem 0; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-size: 0.85rem; }
caption { text-align: left; font-weight: 600; padding: 0.3rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.4rem; text-align: left; vertical-align: top; }
thead th { background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.verdict { font-weight: 600; padding: 0.5rem 0.75rem; background: #f4f6f8; border-left: 4px solid #c0392b; }
ul.key { font-size: 0.85rem; color: #444; padding-left: 1.2rem; margin: 0.25rem 0 1rem; }
figure { margin: 1rem 0; }
figure img, figure svg { display: block; max-width: 100%; height: auto; }
figure img { border: 1px solid #ddd; }
figcaption { font-size: 0.8rem; color: #555; margin-top: 0.25rem; }
pre { overflow-x: auto; font-size: 0.8rem; background: #f8f8f8; padding: 0.5rem; }
section { border-top: 2px solid #eee; margin-top: 2rem; }
@media (max-width: 600px) { body { padding: 0.5rem 0.75rem; } h1 { font-size: 1.25rem; } h2 { font-size: 1.05rem; } }
"""


def render(runs: list[Run]) -> str:
    """The whole page over ``runs``; a field missing or of the wrong type is one line naming its file."""
    sections = []
    for run in runs:
        parts = [f"<h1>{_e(run.name or run.path.name)} <small>({_e(run.kind)})</small></h1>"]
        if run.card is not None:
            with _reading(run.path / "card.json"):
                parts.append(card_section(run))
            if not run.evals and not run.attacks:
                parts.append("<p>No evaluation in this edit directory yet (erasekit eval --protocol … --edit DIR).</p>")
        # a run directory of its own goes by the run's name, not its folder's (eval writes its page in a temporary one)
        for name, results in run.evals.items():
            folder = run.path if run.kind == "eval" else run.path / name
            with _reading(folder / "results.json"):
                parts.append(eval_section(run.name or name if run.kind == "eval" else name, results, folder))
        for name, results in run.attacks.items():
            folder = run.path if run.kind == "attack" else run.path / name
            with _reading(folder / "results.json"):
                parts.append(attack_section(run.name or name if run.kind == "attack" else name, results, folder))
        for name, result in run.bench.items():
            with _reading(run.path / name):
                parts.append(bench_section(name, result, run.name or run.path.name))
        sections.append(f'<section data-testid="run">{"".join(parts)}</section>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>erasekit report</title>'
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
