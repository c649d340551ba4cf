"""Outputs lose nothing: a user's files are never replaced unasked, a second run cannot write the same
path, interrupted writes are cleaned up (or undone), permissions follow the umask, and no edit with
NaN/inf values or without a base hash is saved or applied."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.eval import protocols
from erasekit.eval.protocols import judged
from erasekit.io import UMASK, atomic_dir, check_output, claim_output, write_json
from erasekit.methods.runner import erase
from erasekit.models import embedded

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def erasekit(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "erasekit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ENV
    )


@pytest.fixture(scope="module")
def tiny_pipe():
    torch.manual_seed(0)
    return SimpleNamespace(
        unet=embedded.new_unet().eval(), tokenizer=embedded.load_tokenizer(), text_encoder=embedded.load_text_encoder()
    )


@pytest.fixture(scope="module")
def edit(tiny_pipe):
    return erase(tiny_pipe, EraseSpec(("square",)), "uce", progress=False)


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_erase_out_onto_user_files_is_refused_and_keeps_them(tmp_path):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "precious.txt").write_text("years of work")
    (tmp_path / "notes.txt").write_text("keep me")
    for out in (tmp_path / "thesis", tmp_path / "notes.txt", tmp_path / "notes.txt" / "sub"):
        result = erasekit("erase", "square", "--out", out, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
        assert "--overwrite" in result.stderr or "is a file" in result.stderr
    assert (tmp_path / "thesis" / "precious.txt").read_text() == "years of work"
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert tree(tmp_path) == ["notes.txt", "thesis", "thesis/precious.txt"]  # no lock or temporary left
    result = erasekit("erase", "square", "--out", tmp_path / "thesis", "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "thesis") == ["card.json", "edit.safetensors"]


def test_an_earlier_output_of_the_same_kind_is_replaced(tmp_path, edit):
    out = tmp_path / "edit"
    edit.save(out)
    edit.save(out)  # an edit alone is replaced by the new one
    assert tree(out) == ["card.json", "edit.safetensors"]
    (out / "mine.txt").write_text("mine")
    with pytest.raises(ErasekitError, match="not an erasekit edit output"):
        edit.save(out)
    with pytest.raises(ErasekitError, match="not an erasekit run output"):
        with claim_output(out, "run"):
            pass
    assert (out / "mine.txt").exists()
    edit.save(out, overwrite=True)
    assert tree(out) == ["card.json", "edit.safetensors"]


def test_gates_and_bench_directories_are_their_own_kinds(tmp_path):
    gates, bench = tmp_path / "gates", tmp_path / "bench"
    for name in ("run.json", "images.npz", "grid.png", "prompts.csv", "gates.json", "gates.md"):
        write_json(gates / name, {})
    write_json(bench / "cells" / "uce" / "square-object-8.json", {})  # a half-done bench resumes
    check_output(gates, "gates")
    check_output(bench, "bench")
    write_json(bench / "bench.json", {})
    check_output(bench, "bench")
    for path, kind in ((gates, "bench"), (bench, "gates"), (gates, "run")):
        with pytest.raises(ErasekitError, match=f"not an erasekit {kind} output"):
            check_output(path, kind)


def hold_lock(path):
    """Another process holding ``path``'s lock as a run does (the kernel's lock, its pid in the file)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from erasekit.io import _take_lock; _take_lock(__import__('pathlib').Path(sys.argv[1])); "
         "print('held', flush=True); time.sleep(600)", str(path.parent / f".{path.name}.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_into_a_locked_path_is_refused(tmp_path, edit):
    out = tmp_path / "edit"
    holder = hold_lock(out)
    try:
        with pytest.raises(ErasekitError, match=f"another erasekit run \\(pid {holder.pid}\\) is writing"):
            edit.save(out)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".edit.lock").exists()  # a killed run leaves its lock file …
    edit.save(out)  # … which the next run takes over: the kernel's lock died with the process
    assert not (tmp_path / ".edit.lock").exists() and (out / "card.json").exists()


def test_an_edit_directory_keeps_its_runs_and_card_unless_overwrite(tmp_path, edit):
    out = tmp_path / "edit"
    edit.save(out)
    write_json(out / "eval-object" / "results.json", {"protocol": "object"})
    (out / "README.md").write_text("the hub card")
    for results in ("eval-object", "README.md"):
        with pytest.raises(
            ErasekitError, match=f"holds results of the edit there \\(.*{results}.*\\), which a new edit would delete"
        ):
            edit.save(out)
    assert tree(out) == ["README.md", "card.json", "edit.safetensors", "eval-object", "eval-object/results.json"]
    result = erasekit("erase", "square", "--out", out, cwd=tmp_path)
    assert result.returncode == 2 and "--overwrite" in result.stderr and result.stderr.strip().count("\n") == 0
    assert (out / "eval-object" / "results.json").exists() and (out / "README.md").read_text() == "the hub card"
    edit.save(out, overwrite=True)  # asked for: the new edit alone
    assert tree(out) == ["card.json", "edit.safetensors"]


def test_what_a_killed_eval_left_in_an_edit_does_not_block_the_next_erase(tmp_path, edit):
    out = tmp_path / "edit"
    edit.save(out)
    (out / ".eval-object.lock").write_text("12345\n")  # killed: its kernel lock is gone
    (out / ".eval-object.ab12cd34.tmp").mkdir()
    (out / ".attack-p4d.old.ef56gh78.tmp").mkdir()
    edit.save(out)
    assert tree(out) == ["card.json", "edit.safetensors"]
    holder = hold_lock(out / "eval-object")  # an eval still running in it: the edit is not pulled from under it
    try:
        with pytest.raises(ErasekitError, match=r"an erasekit run is writing .*eval-object; wait for it"):
            edit.save(out)
    finally:
        holder.kill()
        holder.wait()


def claim_in_turns(path, trials, barrier, log, index):
    """One of several processes: in each trial all claim ``path`` at once; a holder records itself."""
    import time

    for trial in range(trials):
        barrier.wait()
        try:
            with claim_output(path, None):
                with open(log, "a") as f:
                    f.write(f"{trial} {index} in\n")
                time.sleep(0.0005)  # widen the window in which a second holder would show
                with open(log, "a") as f:
                    f.write(f"{trial} {index} out\n")
        except ErasekitError:
            pass


def test_the_output_lock_has_one_holder_under_three_concurrent_claimers(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, log, trials = context.Barrier(3), tmp_path / "log", 1000
    workers = [context.Process(target=claim_in_turns, args=(tmp_path / "out", trials, barrier, log, i)) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(worker.exitcode == 0 for worker in workers)
    holders, overlaps, claimed = 0, 0, set()
    for line in log.read_text().splitlines():
        trial, _, event = line.split()
        holders += 1 if event == "in" else -1
        overlaps += holders > 1
        claimed.add(trial)
    assert overlaps == 0 and len(claimed) == trials  # every trial had a holder, never two at once


def test_leftovers_of_interrupted_writes_are_cleared_or_undone(tmp_path, edit):
    out = tmp_path / "edit"
    (tmp_path / ".edit.ab12cd34.tmp").mkdir()  # a half-written directory
    (tmp_path / ".edit.ab12cd34.tmp" / "edit.safetensors").write_bytes(b"half")
    (tmp_path / ".edit.zz99yy88.tmp").write_bytes(b"")  # a half-written file
    (tmp_path / ".edit.old.ef56gh78.tmp" / "x").mkdir(parents=True)  # a swap stopped between its two renames
    (tmp_path / ".edit.old.ef56gh78.tmp" / "x" / "card.json").write_text("{}")
    (tmp_path / ".editor.ab12cd34.tmp").write_text("another output's temporary")
    with claim_output(out, "edit"):
        assert (out / "card.json").read_text() == "{}"  # the old output came back
    assert tree(tmp_path) == [".editor.ab12cd34.tmp", "edit", "edit/card.json"]


def test_outputs_follow_the_umask(tmp_path, edit):
    edit.save(tmp_path / "edit")  # safetensors writes its files 0600 on its own
    assert (tmp_path / "edit" / "edit.safetensors").stat().st_mode & 0o777 == 0o666 & ~UMASK
    with atomic_dir(tmp_path / "run") as tmp:
        write_json(tmp / "results.json", {})
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~UMASK
    assert (tmp_path / "run" / "results.json").stat().st_mode & 0o777 == 0o666 & ~UMASK


def test_non_finite_edits_are_never_made_saved_or_applied(tiny_pipe, edit, tmp_path, monkeypatch):
    with pytest.raises(ErasekitError, match="lam = inf: expected a finite number"):  # refused as a setting first
        erase(tiny_pipe, EraseSpec(("square",)), "uce", lam=float("inf"), progress=False)
    import erasekit.methods.uce as uce

    solve = uce.edited_weights
    monkeypatch.setattr(uce, "edited_weights", lambda *a: {n: w * float("nan") for n, w in solve(*a).items()})
    with pytest.raises(ErasekitError, match="NaN or infinite values in 14 of 14 tensors"):  # a method gone wrong
        erase(tiny_pipe, EraseSpec(("square",)), "uce", progress=False)
    monkeypatch.undo()
    broken = Edit({n: torch.full_like(w, float("nan")) for n, w in edit.weights.items()}, dict(edit.card))
    for action in (lambda: broken.save(tmp_path / "nan"), lambda: broken.apply(tiny_pipe)):
        with pytest.raises(ErasekitError, match="NaN or infinite"):
            action()
    assert not (tmp_path / "nan").exists()
    edit.save(tmp_path / "ok")
    from safetensors.torch import save_file

    save_file({n: w.contiguous() for n, w in broken.weights.items()}, str(tmp_path / "ok" / "edit.safetensors"))
    with pytest.raises(ErasekitError, match="NaN or infinite"):
        Edit.load(tmp_path / "ok")


@pytest.mark.parametrize(
    "card, message",
    [([1, 2], "not an edit card"), ({"method": "uce"}, "not an edit card"), ({"targets": []}, "not an edit card")],
)
def test_cards_that_are_not_edit_cards_are_refused(edit, tmp_path, card, message):
    edit.save(tmp_path / "e")
    (tmp_path / "e" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ErasekitError, match=message):
        Edit.load(tmp_path / "e")


def test_an_edit_without_base_hash_is_refused_unless_asked(tiny_pipe, edit):
    anonymous = Edit(edit.weights, {k: v for k, v in edit.card.items() if k != "base_hash"})
    with pytest.raises(ErasekitError, match="no base_hash"):
        anonymous.apply(tiny_pipe)
    with anonymous.applied(tiny_pipe, check_base=False) as pipe:
        name = next(iter(edit.weights))
        assert torch.equal(dict(pipe.unet.named_parameters())[name], edit.weights[name])


def test_the_base_is_checked_before_any_image_is_generated(pipe, monkeypatch):
    # made on another random initialisation of the same architecture
    other = SimpleNamespace(unet=embedded.new_unet(), tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder)
    foreign = erase(other, EraseSpec(("square",)), "uce", progress=False)

    def no_generation(*args, **kwargs):
        raise AssertionError("generated images before checking the base model")

    monkeypatch.setattr(judged, "generate", no_generation)  # where the judged protocols generate
    monkeypatch.setattr(judged, "generate_cached", no_generation)
    with pytest.raises(ErasekitError, match="different base model"):
        protocols.run_protocol(pipe, foreign, "object", "square", samples=1, progress=False)
