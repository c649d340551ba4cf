"""The command line as a person meets it: it answers at once, says its version, runs as a module,
shows one method, prints user text as typed, and says so when interrupted."""

import os
import signal
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def erasekit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "erasekit", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ENV)


def test_help_and_a_bad_flag_answer_without_loading_torch():
    probe = (
        "import sys; from erasekit.cli import main; sys.argv = ['erasekit', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as done:\n    print('exit', done.code, 'torch' in sys.modules, file=sys.stderr)"
    )
    answered_at_once = (
        (["--help"], 0),
        (["erase", "--help"], 0),
        (["erase", "square", "--out", "x", "--guidance", "1"], 2),  # typer's own check of a flag
        (["erase", "square", "--out", "x", "--set", "lam"], 2),  # a setting without its value
        (["erase", "square", "--preserve", "square", "--out", "x"], 2),  # the concept lists
    )
    for args, code in answered_at_once:
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=ENV)
        assert result.stderr.strip().endswith(f"exit {code} False"), (args, result.stderr)  # torch was never imported


def test_version_and_python_dash_m():
    from erasekit.version import __version__

    result = erasekit("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"erasekit {__version__}"
    assert "Usage: python -m erasekit" in erasekit("--help").stdout or "Usage:" in erasekit("--help").stdout


def test_methods_shows_one_method_and_refuses_an_unknown_one():
    one = erasekit("methods", "esd-x")
    assert one.returncode == 0 and one.stdout.startswith("esd-x  ") and "iterations" in one.stdout
    assert "uce " not in one.stdout  # only the one asked for
    unknown = erasekit("methods", "esdx")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown method 'esdx'")


def test_methods_wraps_between_words_in_80_columns():
    lines = erasekit("methods", "uce").stdout.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    words = [w for line in lines[1:] for w in line.split()]
    assert "λ:" in words and "pull" in words and "towards" in words  # no word cut in two


@pytest.mark.parametrize(
    "args, shown",
    [
        (["erase", "square", "--out", "x", "--set", "[/red]oops"], "--set takes key=value, not '[/red]oops'"),
        (["erase", "[/x]", "--preserve", "[/x]", "--out", "x"], "[/x] is both erased and preserved"),
        (["erase", "[bold]sq[/bold]", "--preserve", "[bold]sq[/bold]", "--out", "x"], "[bold]sq[/bold] is both erased"),
        (["methods", "[/i]"], "unknown method '[/i]'"),
    ],
)
def test_user_text_with_rich_markup_is_printed_as_typed(tmp_path, args, shown):
    result = erasekit(*args, cwd=tmp_path)
    assert result.returncode == 2 and shown in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()


def test_a_very_long_concept_is_not_echoed_whole(tmp_path):
    concept = "z" * 18_000
    result = erasekit("erase", concept, "--preserve", concept, "--out", "x", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr) < 2_500 and "characters)" in result.stderr, len(result.stderr)


def test_ctrl_c_says_what_happened_exits_130_and_leaves_nothing(tmp_path):
    """Interrupted once its x_t plan shows progress (a budget in steps, not seconds)."""
    command = [
        sys.executable,
        "-m",
        "erasekit",
        "erase",
        "square",
        "--method",
        "esd-x",
        "--set",
        "sample_steps=400",
        "--out",
        "x",
    ]
    # Ctrl-C's default restored in the child: a shell's background job (CI's, maybe) starts with it ignored
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    seen = ""
    while "x_t plan" not in seen:
        char = process.stderr.read(1)
        assert char, f"ended before its x_t plan showed: {seen[-500:]}"
        seen += char
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait() == 130
    assert rest.strip().splitlines()[-1] == "error: interrupted; what was being written was left out (a rerun cleans up)"
    assert "Traceback" not in rest and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["erase", "square", "--out", "x", "--lora-rank", "-3"], "the LoRA rank cap must be 1 to"),
        (["erase", "square", "--out", "x", "--lora-rank", "0"], "the LoRA rank cap must be 1 to"),
        (
            ["erase", "square", "--out", "x", "--expand", "2", "--expand-min-similarity", "nan"],
            "nan is not a number from -1 to 1",
        ),
        (["erase", "square", "--out", "x", "--expand-min-similarity", "1.5"], "1.5 is not a number from -1 to 1"),
        (["erase", "square", "--out", "x", "--expand", "-1"], "--expand"),
        (["erase", "square", "--out", "x", "--save-single-file", "x.ckpt"], "give --out a name ending in .safetensors"),
        (["eval", "--protocol", "object", "--edit", "e", "--guidance", "nan"], "nan is not a number from 0 to 100"),
        (["eval", "--protocol", "object", "--edit", "e", "--guidance", "inf"], "inf is not a number from 0 to 100"),
        (["eval", "--protocol", "object", "--edit", "e", "--concept", "  "], "--concept is empty"),
        (["attack", "--attack", "p4d", "--edit", "e", "--concept", ""], "--concept is empty"),
        (["world", "show", "--seed", "-1"], "--seed"),
        (["world", "train", "--unet-steps", "-1"], "--unet-steps"),
        (["world", "train", "--minutes", "nan"], "nan is not a number"),
        (["expand", "square", "--top-k", "0"], "--top-k"),
        (["export", "e", "--format", "pipeline", "--out", "p", "--dtype", "fp8"], "unknown dtype 'fp8'"),
        (["push", "e", "--repo-id", "not a repo id"], "is not a hub repository id"),
    ],
)
def test_bad_numbers_and_empty_text_are_one_line_before_anything_loads(tmp_path, args, message):
    from erasekit.edits import Edit

    sld = {"sld_guidance_scale": 1000, "sld_warmup_steps": 10, "sld_threshold": 0.01, "sld_momentum_scale": 0.3,
           "sld_mom_beta": 0.4, "safety_concept": "square"}  # fmt: skip
    Edit({}, {"method": "sld", "targets": ["square"], "inference": {"sld": sld}}).save(tmp_path / "e")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = erasekit(*args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
