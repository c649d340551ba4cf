"""The README's and docs' generated tables are what their committed JSON gives (no hand-copied numbers),
and every link between the pages points at a file that exists."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_generated_table_equals_its_json():
    result = subprocess.run([sys.executable, ROOT / "scripts" / "doc_tables.py", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- table: ") >= 1 and "| original |" in readme  # the marker is filled, not empty


def test_a_stale_table_is_caught(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import doc_tables
    finally:
        sys.path.pop(0)
    text = "<!-- table: bench/spm-object.json -->\n| a hand-edited row |\n<!-- /table -->\n"
    fixed, changed = doc_tables.regenerated(text)
    assert changed == ["bench/spm-object.json"] and "| `spm iterations=200" in fixed
    assert doc_tables.regenerated(fixed)[1] == []


def test_links_between_the_pages_resolve():
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), f"{page.relative_to(ROOT)} links to missing {target}"


def documented_commands():
    """Every `erasekit …` command in the README's and docs' shell blocks, as (page, argument list)."""
    import shlex

    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S)
        # prose: not the code blocks, nor table rows (bench/startup.json's table times bad flags on purpose)
        prose = re.sub(r"```.*?```|^\|[^\n]*$", "", text, flags=re.S | re.M)
        blocks += re.findall(r"`(erasekit [^`\n]*--[^`\n]*)`", prose)  # inline commands with options: `erasekit erase … --out X`
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
                lexer.whitespace_split, lexer.commenters = True, "#"
                tokens, parts = list(lexer), [[]]
                for token in tokens:  # the commands of a line joined by && || ; |
                    parts.append([]) if token in ("&&", "||", ";", "|", "&") else parts[-1].append(token)
                for words in parts:
                    if words[:1] == ["erasekit"]:
                        found.append((page.relative_to(ROOT), words[1:]))
                    elif words[:3] == ["accelerate", "launch", "-m"] or "erasekit" in words[:8]:
                        rest = words[words.index("erasekit") + 1 :] if "erasekit" in words else []
                        if rest and not rest[0].startswith("-"):
                            found.append((page.relative_to(ROOT), rest))
    return found


def test_every_documented_command_parses_as_written():
    """Each command of README.md and docs/ goes through the CLI's parser (nothing runs): a renamed or
    missing option, or a required one left out, fails here instead of in a user's shell."""
    import typer

    from erasekit.cli import app

    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")  # typer's own click
    commands = documented_commands()
    assert len(commands) >= 30, commands
    root = typer.main.get_command(app)
    broken = []
    for page, args in commands:
        try:
            command, name, rest, parent = root, "erasekit", list(args), None
            while True:
                context = command.make_context(name, rest, parent=parent)
                if not hasattr(command, "resolve_command"):  # a command, not a group of them
                    break
                rest = [*getattr(context, "_protected_args", []), *context.args]  # what the group leaves to its command
                name, command, rest = command.resolve_command(context, rest)
                parent = context
        except click_error as error:
            broken.append(f"{page}: erasekit {' '.join(args)} → {error.format_message()}")
    assert not broken, "\n".join(broken)
