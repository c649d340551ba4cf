"""`erasekit report`: the page opens in a real headless Chromium without console errors, every image
and plot renders, and the numbers on the page are the JSON's; bad run directories are one line."""

import json
import os
import shutil
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from erasekit.methods.base import EraseSpec
from erasekit.methods.runner import erase

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it); Playwright drives it
BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "erasekit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
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


def page_facts(path: Path) -> dict:
    """Open ``path`` in headless Chromium: console errors, images, plots (as PNG screenshots) and numbers."""
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
        browser.close()
    return {"errors": errors, "images": images, "plots": plots, "tables": tables}


def not_blank(png: bytes) -> bool:
    pixels = np.asarray(Image.open(BytesIO(png)).convert("L"))
    return pixels.std() > 5 and (pixels < 128).mean() > 0.002  # some dark ink on the page's white


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_the_report_opens_in_chromium_renders_everything_and_shows_the_jsons_numbers(runs):
    result = run_cli("report", runs / "edit", runs / "bench", runs / "flames", "--out", runs / "report.html", cwd=runs)
    assert result.returncode == 0, result.stderr
    facts = page_facts(runs / "report.html")
    assert facts["errors"] == []
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
    facts = page_facts(tmp_path / "r.html")
    assert facts["errors"] == [] and len(facts["plots"]) == 1 and not_blank(facts["plots"][0])
    bench = json.loads((BENCH / "robustness-object.json").read_text())
    rows = facts["tables"]["robustness-robust"]
    quality = [k for k in ("H_o", "H_c", "Acc_e", "Acc_s", "Acc_g") if k in next(iter(bench["methods"].values()))["accuracy"]]
    expected = [
        [*(m["accuracy"][k] for k in quality),
         *(v for a in bench["attacks"] for v in (m["attacks"][a]["asr"], m["attacks"][a]["baseline_asr"]) if v is not None)]
        for m in bench["methods"].values()
    ]  # fmt: skip
    assert [[v for v, *_ in row] for row in rows] == expected
