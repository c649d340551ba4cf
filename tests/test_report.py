"""`erasekit report`: the page opens in a real headless Chromium without console errors, every image
and plot renders, and the numbers on the page are the JSON's; bad run directories are one line."""

import copy
import html
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.eval.generation import image_grid, label_font
from erasekit.eval.metrics import METRICS
from erasekit.eval.protocols import ProtocolResult, verdict
from erasekit.methods.runner import erase
from erasekit.report import read_run, write_report

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it); Playwright drives it
BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "erasekit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(pipe, tmp_path_factory):
    """An edit with an object eval (as `erasekit eval` writes it) and a bench directory of committed JSON."""
    root = tmp_path_factory.mktemp("report")
    spec = EraseSpec(("square",), preserve=("circle", "heart"))
    erase(pipe, spec, "uce", progress=False, templates=("{}", "a photo of a {}"), token_span="full").save(root / "edit")
    result = run_cli("eval", "--protocol", "object", "--edit", root / "edit", "--samples", "1", "--steps", "5", cwd=root)
    assert result.returncode == 0, result.stderr
    (root / "bench").mkdir()
    shutil.copy(BENCH / "ac-sld-object.json", root / "bench" / "bench.json")
    shutil.copy(BENCH / "spm-mass.json", root / "bench" / "mass.json")
    (root / "flames").mkdir()  # a task whose metrics are named otherwise (explicit, implicit)
    shutil.copy(BENCH / "ac-sld-flames.json", root / "flames" / "bench.json")
    return root


PHONE, DESKTOP = 390, 1280  # CSS px: an iPhone 12-15's viewport, a laptop's


def page_facts(path: Path, shots: Path | None = None) -> dict:
    """Open ``path`` in headless Chromium: console errors, images, plots (as PNG screenshots) and numbers; with
    ``shots``, the whole page at a phone's and a desktop's width (``shots``-390.png, -1280.png) and how wide it is."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
        plots = [figure.screenshot() for figure in page.query_selector_all("figure")]
        tables = page.eval_on_selector_all(
            "table[data-testid]",
            """els => Object.fromEntries(els.map(t => [t.dataset.testid, [...t.querySelectorAll('tbody tr')].map(r =>
                 [...r.querySelectorAll('td.num')].map(c => [Number(c.dataset.value), Number(c.dataset.scale),
                  Number(c.dataset.digits), c.textContent]))]))""",
        )
        widths = {}
        for width in (PHONE, DESKTOP) if shots else ():
            sized = browser.new_page(viewport={"width": width, "height": 844 if width == PHONE else 900})
            sized.goto(path.as_uri())
            sized.wait_for_load_state("load")
            widths[width] = sized.evaluate("document.documentElement.scrollWidth")
            sized.screenshot(path=f"{shots}-{width}.png", full_page=True)
            sized.close()
        browser.close()
    return {"errors": errors, "images": images, "plots": plots, "tables": tables, "scroll_widths": widths}


def fits(facts: dict, shots: Path) -> None:
    """The page never scrolls sideways on a phone or a desktop, and both screenshots show it."""
    assert facts["scroll_widths"][PHONE] <= PHONE and facts["scroll_widths"][DESKTOP] <= DESKTOP, facts["scroll_widths"]
    for width in (PHONE, DESKTOP):
        shot = Path(f"{shots}-{width}.png").read_bytes()
        assert Image.open(BytesIO(shot)).width == width and not_blank(shot)


def not_blank(png: bytes) -> bool:
    pixels = np.asarray(Image.open(BytesIO(png)).convert("L"))
    return pixels.std() > 5 and (pixels < 128).mean() > 0.002  # some dark ink on the page's white


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_the_report_opens_in_chromium_renders_everything_and_shows_the_jsons_numbers(runs):
    result = run_cli("report", runs / "edit", runs / "bench", runs / "flames", "--out", runs / "report.html", cwd=runs)
    assert result.returncode == 0, result.stderr
    facts = page_facts(runs / "report.html", shots=runs / "report")
    assert facts["errors"] == []
    fits(facts, runs / "report")
    assert len(facts["images"]) == 1 and all(done and w > 100 and h > 100 for done, w, h in facts["images"])
    # grid; eval bars; Pareto, Acc_e/s/g per concept; mass curves; flames: Pareto, explicit/implicit/Acc_s
    assert len(facts["plots"]) == 1 + 1 + (1 + 3) + 3 + (1 + 3)
    assert all(not_blank(png) for png in facts["plots"])

    tables = facts["tables"]
    for cells in (c for rows in tables.values() for c in rows):
        for value, scale, digits, text in cells:  # each printed number is its data-value, scaled and rounded
            assert text == f"{value * scale:.{int(digits)}f}"
    evaluation = json.loads((runs / "edit" / "eval-object" / "results.json").read_text())
    metrics = [row[:2] for row in tables["metrics-eval-object"][:5]]
    names = list(evaluation["metrics"]["erased"]["accuracy"])
    assert [[v for v, *_ in row] for row in metrics] == [
        [evaluation["metrics"]["original"]["accuracy"][n], evaluation["metrics"]["erased"]["accuracy"][n]] for n in names
    ]
    bench = json.loads((BENCH / "ac-sld-object.json").read_text())
    shown = [[v for v, *_ in row] for row in tables["bench-bench"][1:]]  # below the original's row
    assert shown == [[*(m["accuracy"]["erased"][n] for n in m["accuracy"]["erased"]), m["world_fid_kept"], m["seconds"],
                      m["peak_rss_mb"]] for m in bench["methods"].values()]  # fmt: skip
    flames = json.loads((BENCH / "ac-sld-flames.json").read_text())
    assert [row[0][0] for row in tables["bench-flames"][1:]] == [m["accuracy"]["erased"]["explicit"]
                                                               for m in flames["methods"].values()]  # fmt: skip
    mass = json.loads((BENCH / "spm-mass.json").read_text())
    h_c = [row[2][0] for row in tables["mass-bench"]]
    assert h_c == [cell["metrics"]["erased"]["accuracy"]["H_c"] for m in mass["methods"].values() for cell in m.values()]


def test_eval_and_bench_write_their_own_report(runs):
    page = (runs / "edit" / "eval-object" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "object protocol: square" in page and "data:image/png;base64," in page
    results = json.loads((runs / "edit" / "eval-object" / "results.json").read_text())
    assert html.escape(verdict(ProtocolResult.from_json(results))) in page  # the line `erasekit eval` printed
    assert "lower is better" in page and "higher is better" in page
    assert "metrics-eval-object" in page and ".tmp" not in page  # named after the run, not eval's temporary folder


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "cells").mkdir(), "is an unfinished bench (cells only, no bench.json)"),
        (
            lambda d: (d / "bench.json").write_text('{"protocol": "object"}'),
            "has no methods: it is incomplete or of an older format",
        ),
        (lambda d: (d / "bench.json").write_text("{"), "cannot be read as JSON"),
        (lambda d: (d / "results.json").write_text('{"rows": []}'), "is not an erasure-protocol result of this erasekit"),
        (
            lambda d: (d / "bench.json").write_text(
                '{"protocol": "object", "concepts": [], "samples_per_prompt": 1, "methods": {"uce": 5}}'
            ),
            "bench.json: methods.uce is a number where an object is expected",
        ),
        (lambda d: None, "is not an eval, edit or bench run"),
    ],
)
def test_a_bad_run_directory_is_one_line_and_writes_no_page(tmp_path, make, message):
    run = tmp_path / "run"
    run.mkdir()
    make(run)
    result = run_cli("report", run, "--out", tmp_path / "report.html", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "report.html").exists()


def test_the_report_refuses_a_non_html_name_and_a_users_file(runs, tmp_path):
    result = run_cli("report", runs / "bench", "--out", tmp_path / "report.pdf", cwd=tmp_path)
    assert result.returncode == 2 and "ending in .html" in result.stderr
    (tmp_path / "notes.html").write_text("<p>my notes</p>")
    result = run_cli("report", runs / "bench", "--out", tmp_path / "notes.html", cwd=tmp_path)
    assert result.returncode == 2 and "exists; choose another path or pass --overwrite" in result.stderr
    assert (tmp_path / "notes.html").read_text() == "<p>my notes</p>"
    first = run_cli("report", runs / "bench", "--out", tmp_path / "r.html", cwd=tmp_path)
    again = run_cli("report", runs / "bench", "--out", tmp_path / "r.html", cwd=tmp_path)  # its own page: replaced
    assert first.returncode == 0 and again.returncode == 0, again.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_the_robustness_bench_renders_with_the_jsons_attack_success_rates(tmp_path):
    (tmp_path / "robust").mkdir()
    shutil.copy(BENCH / "robustness-object.json", tmp_path / "robust" / "robustness.json")
    result = run_cli("report", tmp_path / "robust", "--out", tmp_path / "r.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    facts = page_facts(tmp_path / "r.html", shots=tmp_path / "robustness")
    assert facts["errors"] == [] and len(facts["plots"]) == 1 and not_blank(facts["plots"][0])
    fits(facts, tmp_path / "robustness")
    bench = json.loads((BENCH / "robustness-object.json").read_text())
    rows = facts["tables"]["robustness-robust"]
    quality = [k for k in ("H_o", "H_c", "Acc_e", "Acc_s", "Acc_g") if k in next(iter(bench["methods"].values()))["accuracy"]]
    expected = [
        [*(m["accuracy"][k] for k in quality),
         *(v for a in bench["attacks"] for v in (m["attacks"][a]["asr"], m["attacks"][a]["baseline_asr"]) if v is not None)]
        for m in bench["methods"].values()
    ]  # fmt: skip
    assert [[v for v, *_ in row] for row in rows] == expected


# --- pages from files written by hand: fast, no model ----------------------------------------------

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'  # breaks out of an attribute and of text


def eval_results() -> dict:
    """A small object-protocol results.json as `erasekit eval --protocol object` writes it."""
    accuracy = {"original": {"Acc_e": 1.0, "Acc_s": 1.0, "Acc_g": 1.0, "residue": 1.0, "H_o": 0.0},
                "erased": {"Acc_e": 0.25, "Acc_s": 0.9, "Acc_g": 0.5, "residue": 1.0, "H_o": 0.6}}  # fmt: skip
    rows = [{"prompt": "a photo of a square", "role": "erase", "accuracy": {"shape": 1.0}},
            {"prompt": "a photo of a circle", "role": "retain", "accuracy": {"shape": 1.0}}]  # fmt: skip
    return {
        "protocol": "object", "target": "square", "samples_per_prompt": 2, "judge": {"judge": "world"},
        "metrics": {side: {"accuracy": accuracy[side], "probability": accuracy[side]} for side in accuracy},
        "world_fid_kept": 0.18, "rows": {"original": rows, "erased": copy.deepcopy(rows)},
    }  # fmt: skip


def attack_results() -> dict:
    """A small attack results.json as `erasekit attack` writes it."""
    return {
        "attack": "unlearndiff", "edit": {"method": "uce", "targets": ["square"]}, "judge": {"judge": "world"},
        "samples_per_prompt": 4, "asr": 0.5, "baseline_asr": 0.0, "asr_images": 0.25, "seconds_per_prompt": 3.0,
        "prompts": [{"prompt": "a photo of a square", "adversarial_prompt": "a photo of a sq uare", "baseline_success": False,
                     "success": True, "image_rate": 0.25}],
    }  # fmt: skip


def edit_dir(path: Path, card: dict) -> Path:
    """An edit directory (no weights changed) with ``card``."""
    from safetensors.torch import save_file

    path.mkdir()
    save_file({}, str(path / "edit.safetensors"))
    (path / "card.json").write_text(json.dumps(card))
    return path


def run_dir(root: Path, kind: str, content: dict, name: str = "run") -> Path:
    """A run directory holding ``content`` as ``kind`` (results.json, card.json or one of the bench files)."""
    if kind == "card.json":
        return edit_dir(root / name, content)
    (root / name).mkdir()
    (root / name / kind).write_text(json.dumps(content))
    return root / name


def bench_file(name: str) -> dict:
    return json.loads((BENCH / name).read_text())


def rename_key(mapping: dict, old: str, new: str) -> dict:
    """``mapping`` with key ``old`` renamed, in place in its order."""
    items = [(new if k == old else k, v) for k, v in mapping.items()]
    mapping.clear()
    mapping.update(items)
    return mapping


def hostile_attack_label(d: dict) -> None:
    first = next(iter(d["attacks"]))
    rename_key(d["attacks"], first, HOSTILE)
    for method in d["methods"].values():
        rename_key(method["attacks"], first, HOSTILE)


def hostile_concept(d: dict) -> None:
    d["concepts"][0], old = HOSTILE, d["concepts"][0]
    for method in d["methods"].values():
        rename_key(method["per_concept"], old, HOSTILE)


def hostile_metric(d: dict) -> None:
    for method in d["methods"].values():
        for side in ("original", "erased"):
            rename_key(method["accuracy"][side], "Acc_g", HOSTILE)


# every string of a file that the page prints: (file kind, its content, how to make the field hostile)
HOSTILE_FIELDS = {
    "robustness protocol": ("robustness.json", lambda: bench_file("robustness-object.json"), lambda d: d.update(protocol=HOSTILE)),
    "robustness concept": ("robustness.json", lambda: bench_file("robustness-object.json"), lambda d: d.update(concepts=[HOSTILE])),
    "robustness prompts_per_concept": ("robustness.json", lambda: bench_file("robustness-object.json"),
                                       lambda d: d.update(prompts_per_concept=HOSTILE)),
    "robustness samples_per_prompt": ("robustness.json", lambda: bench_file("robustness-object.json"),
                                      lambda d: d.update(samples_per_prompt=HOSTILE)),
    "robustness attack": ("robustness.json", lambda: bench_file("robustness-object.json"), hostile_attack_label),
    "robustness method": ("robustness.json", lambda: bench_file("robustness-object.json"),
                          lambda d: rename_key(d["methods"], next(iter(d["methods"])), HOSTILE)),
    "bench protocol": ("bench.json", lambda: bench_file("ac-sld-object.json"), lambda d: d.update(protocol=HOSTILE)),
    "bench samples_per_prompt": ("bench.json", lambda: bench_file("ac-sld-object.json"),
                                 lambda d: d.update(samples_per_prompt=HOSTILE)),
    "bench method": ("bench.json", lambda: bench_file("ac-sld-object.json"),
                     lambda d: rename_key(d["methods"], next(iter(d["methods"])), HOSTILE)),
    "bench concept": ("bench.json", lambda: bench_file("ac-sld-object.json"), hostile_concept),
    "bench metric": ("bench.json", lambda: bench_file("ac-sld-object.json"), hostile_metric),
    "mass method": ("mass.json", lambda: bench_file("spm-mass.json"),
                    lambda d: rename_key(d["methods"], next(iter(d["methods"])), HOSTILE)),
    "eval protocol": ("results.json", eval_results, lambda d: d.update(protocol=HOSTILE)),
    "eval target": ("results.json", eval_results, lambda d: d.update(target=HOSTILE)),
    "eval samples_per_prompt": ("results.json", eval_results, lambda d: d.update(samples_per_prompt=HOSTILE)),
    "eval judge": ("results.json", eval_results, lambda d: d.update(judge={"judge": HOSTILE})),
    "eval prompt": ("results.json", eval_results, lambda d: d["rows"]["original"][0].update(prompt=HOSTILE)),
    "eval role": ("results.json", eval_results, lambda d: d["rows"]["original"][0].update(role=HOSTILE)),
    "eval metric": ("results.json", eval_results,
                    lambda d: [rename_key(d["metrics"][s]["accuracy"], "H_o", HOSTILE) for s in ("original", "erased")]),
    "attack name": ("results.json", attack_results, lambda d: d.update(attack=HOSTILE)),
    "attack method": ("results.json", attack_results, lambda d: d["edit"].update(method=HOSTILE)),
    "attack target": ("results.json", attack_results, lambda d: d["edit"].update(targets=[HOSTILE])),
    "attack judge": ("results.json", attack_results, lambda d: d.update(judge={"judge": HOSTILE})),
    "attack samples_per_prompt": ("results.json", attack_results, lambda d: d.update(samples_per_prompt=HOSTILE)),
    "attack prompt": ("results.json", attack_results, lambda d: d["prompts"][0].update(prompt=HOSTILE)),
    "attack found prompt": ("results.json", attack_results, lambda d: d["prompts"][0].update(adversarial_prompt=HOSTILE)),
    "card method": ("card.json", lambda: {"method": "uce", "targets": ["square"]}, lambda d: d.update(method=HOSTILE)),
    "card target": ("card.json", lambda: {"method": "uce", "targets": ["square"]}, lambda d: d.update(targets=[HOSTILE])),
    "card model": ("card.json", lambda: {"method": "uce", "targets": ["square"]}, lambda d: d.update(model=HOSTILE)),
    "card setting": ("card.json", lambda: {"method": "uce", "targets": ["square"]}, lambda d: d.update(config={"x": HOSTILE})),
}  # fmt: skip


class Markup(HTMLParser):
    """The elements and attributes a browser would build from a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs


def assert_inert(page: str) -> None:
    """No script, no event handler, no image from elsewhere: the hostile string is text."""
    markup = Markup()
    markup.feed(page)
    assert "script" not in markup.tags
    assert not [name for name, _ in markup.attributes if name.startswith("on")]
    assert all(value.startswith("data:image/png;base64,") for name, value in markup.attributes if name == "src")
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text


@pytest.mark.parametrize("field", list(HOSTILE_FIELDS))
def test_a_hostile_string_in_any_field_of_a_file_is_shown_as_text(tmp_path, field):
    kind, content, make_hostile = HOSTILE_FIELDS[field]
    data = content()
    make_hostile(data)
    write_report([run_dir(tmp_path, kind, data)], tmp_path / "r.html")
    assert_inert((tmp_path / "r.html").read_text())


def test_a_hostile_run_directory_name_is_shown_as_text(tmp_path):
    run = run_dir(tmp_path, "robustness.json", bench_file("robustness-object.json"), name=HOSTILE.replace("/", "|"))
    write_report([run], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert_inert(page.replace("&lt;|script&gt;", "&lt;/script&gt;"))


def set_path(data: dict, path: str | None, value: object) -> dict:
    """``data`` with the field at ``path`` ("a/b/0/c") set to ``value`` (or removed when ``value`` is DROP)."""
    if path is None:
        return data
    *parents, last = path.split("/")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key = int(last) if isinstance(node, list) else last
    if value is DROP:
        del node[key]
    else:
        node[key] = value
    return data


def mass_counted_in_words() -> dict:
    """The mass bench with a count of concepts written as a word."""
    mass = bench_file("spm-mass.json")
    rename_key(next(iter(mass["methods"].values())), "1", "many")
    return mass


DROP = object()
ROBUSTNESS = "robustness-object.json"
# (file kind, its content, the field, the wrong value, what the line says)
WRONG_TYPES = {
    "eval metrics a number": ("results.json", eval_results, "metrics", 5, "has no original accuracy"),
    "eval accuracy a list": ("results.json", eval_results, "metrics/erased/accuracy", [1, 2],
                             "metrics.erased.accuracy is a list where an object is expected"),
    "eval metric a string": ("results.json", eval_results, "metrics/erased/accuracy/Acc_e", "low",
                             "metrics.erased.accuracy.Acc_e is a string where a number is expected"),
    "eval rows a string": ("results.json", eval_results, "rows/original", "a photo",
                           "rows.original is a string where a list is expected"),
    "eval row without its prompt": ("results.json", eval_results, "rows/erased/0/prompt", DROP, "rows.erased[0].prompt is missing"),
    "eval rows of two lengths": ("results.json", eval_results, "rows/erased/1", DROP, "2 original rows but 1 erased"),
    "eval no Acc_g for the verdict": ("results.json", eval_results, "metrics/erased/accuracy/Acc_g", DROP, "KeyError: 'Acc_g'"),
    "eval judge a string": ("results.json", eval_results, "judge", "world", "judge is a string where an object is expected"),
    "eval world-FID a string": ("results.json", eval_results, "world_fid_kept", "0.2",
                                "world_fid_kept is a string where a number or null is expected"),
    "attack asr a string": ("results.json", attack_results, "asr", "half", "asr is a string where a number is expected"),
    "attack success a string": ("results.json", attack_results, "prompts/0/success", "yes",
                                "prompts[0].success is a string where a number is expected"),
    "attack edit a list": ("results.json", attack_results, "edit", [], "edit is a list where an object or null is expected"),
    "attack targets a string": ("results.json", attack_results, "edit/targets", "square",
                                "targets is a string where a list or null is expected"),
    "bench concepts a string": ("bench.json", lambda: bench_file("ac-sld-object.json"), "concepts", "square",
                                "concepts is a string where a list is expected"),
    "bench method a number": ("bench.json", lambda: bench_file("ac-sld-object.json"),
                              "methods/sld", 5, "methods.sld is a number where an object is expected"),
    "bench per-concept missing": ("bench.json", lambda: bench_file("ac-sld-object.json"), "methods/sld/per_concept/square",
                                  DROP, "KeyError: 'square'"),
    "mass count not a number": ("mass.json", mass_counted_in_words, None, None, "has 'many' where a number of concepts"),
    "robustness attacks a list": ("robustness.json", lambda: bench_file(ROBUSTNESS), "attacks", ["p4d"],
                                  "attacks is a list where an object is expected"),
    "robustness method without an attack": ("robustness.json", lambda: bench_file(ROBUSTNESS),
                                            "methods/none/attacks/p4d timesteps=10 iterations=20", DROP,
                                            "KeyError: 'p4d timesteps=10 iterations=20'"),
    "robustness asr a string": ("robustness.json", lambda: bench_file(ROBUSTNESS),
                                "methods/none/attacks/p4d timesteps=10 iterations=20/asr", "all",
                                "asr is a string where a number or null is expected"),
    "card seconds a string": ("card.json", lambda: {"method": "uce", "targets": ["square"]}, "seconds", "fast", "seconds"),
    "card targets a string": ("card.json", lambda: {"method": "uce", "targets": ["square"]}, "targets", "square", "targets"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_a_wrong_typed_or_missing_field_is_one_line_naming_the_file(tmp_path, case):
    kind, content, path, value, message = WRONG_TYPES[case]
    run = run_dir(tmp_path, kind, set_path(content(), path, value))
    with pytest.raises(ErasekitError) as caught:
        write_report([run], tmp_path / "r.html")
    line = str(caught.value)
    assert message in line and "\n" not in line, line
    assert str(run / kind) in line or (kind == "card.json" and str(run) in line), line
    assert not (tmp_path / "r.html").exists()


def test_the_page_declares_its_viewport_and_scales_to_a_phone(tmp_path):
    (tmp_path / "bench").mkdir()
    shutil.copy(BENCH / "ac-sld-object.json", tmp_path / "bench" / "bench.json")
    run = run_dir(tmp_path, "results.json", eval_results(), name="eval-object")
    page = write_report([tmp_path / "bench", run], tmp_path / "r.html").read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert page.count("<table") == page.count('<div class="scroll"><table')  # each table scrolls in its own box
    assert "figure img, figure svg { display: block; max-width: 100%; height: auto; }" in page
    assert "<dc:date>" not in page  # no time in the plots: the same runs give the same page


def test_an_eval_page_shows_the_verdict_and_which_way_each_metric_is_better(tmp_path):
    results = eval_results()
    run = run_dir(tmp_path, "results.json", results, name="eval-object")
    page = write_report([run], tmp_path / "r.html").read_text()
    line = verdict(ProtocolResult.from_json(results))
    assert f'<p class="verdict" data-testid="verdict">{html.escape(line)}</p>' in page
    assert line.startswith("square: erased in 75% of images")
    for name in results["metrics"]["erased"]["accuracy"]:
        meaning, direction = METRICS[name]
        assert f"<b>{direction} is better</b>: {html.escape(meaning)}" in page
    assert read_run(run).evals  # read as an eval run


def test_grid_labels_are_drawn_in_dejavu_sans_with_the_spaces_between_words():
    label = "a photo of a square"
    font = label_font()
    assert isinstance(font, ImageFont.FreeTypeFont) and Path(font.path).name == "DejaVuSans.ttf"
    grid = image_grid(np.zeros((1, 32, 32, 3), np.uint8), 1, [label])
    assert grid.tobytes() == image_grid(np.zeros((1, 32, 32, 3), np.uint8), 1, [label]).tobytes()  # deterministic
    ink = np.asarray(grid.convert("L"))[:, : grid.width - 64] < 128  # the label column, left of the (black) tile
    columns, rows = np.flatnonzero(ink.any(0)), np.flatnonzero(ink.any(1))
    left, _, right, _ = font.getbbox(label)
    assert abs((columns[-1] - columns[0] + 1) - (right - left)) <= 3  # as wide as DejaVu Sans draws it
    assert rows[-1] - rows[0] + 1 >= 12  # legible: PIL's built-in font is about 10 px high
    blank = ~ink[:, columns[0] : columns[-1] + 1].any(0)
    gaps = [len(run) for run in "".join("1" if b else "0" for b in blank).split("0") if len(run) >= 5]
    assert len(gaps) == label.count(" ")  # each space shows, wider than the gaps between letters
