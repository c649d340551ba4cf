import pytest

from erasekit.errors import ErasekitError
from erasekit.eval.prompts import MAX_SAMPLES, PROMPT_DIR, SEED_PAGE, parse_rows, read_prompt_file, write_prompt_file


def rec(**kw):
    base = {"prompt": "a photo of a square", "seed": "0", "role": "erase"}
    base.update(kw)
    return base


def test_demo_file_parses():
    rows = read_prompt_file("demo.csv")
    assert rows and all(r.samples == 8 for r in rows)
    assert rows[0].expected == {"shape": "square"}


@pytest.mark.parametrize(
    "bad, message",
    [
        (rec(prompt="  "), "empty prompt"),
        (rec(seed="1.5"), "is not an integer"),
        (rec(seed=""), "is not an integer"),
        (rec(role="forget"), "role 'forget'"),
        (rec(shape="pentagon"), "unknown shape 'pentagon'"),
        (rec(shape="Square"), "did you mean 'square'"),
        (rec(character="Captain Zed"), "unknown character"),
        (rec(artist="Picasso"), "unknown artist"),
        (rec(flames="maybe"), "flames must be yes or no"),
        (rec(samples="0"), "samples"),
        (rec(seed_block="-1"), "seed_block"),
        (rec(seed_block="x"), "seed_block"),
    ],
)
def test_bad_rows_get_one_line_errors(bad, message):
    with pytest.raises(ErasekitError, match=message) as err:
        parse_rows([rec(), bad], source="p.csv")
    assert "line 3" in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_missing_columns(tmp_path):
    with pytest.raises(ErasekitError, match="does not exist"):
        read_prompt_file(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,seed\nhello,1\n")
    with pytest.raises(ErasekitError, match="missing column"):
        read_prompt_file(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt,seed,role\n")
    with pytest.raises(ErasekitError, match="no prompts"):
        read_prompt_file(empty)


def test_a_rows_image_seeds_do_not_depend_on_its_samples():
    plain, blocked = parse_rows([rec(seed="5", samples="3"), rec(seed="5", samples="3", seed_block="2")])
    assert [plain.image_seed(k) for k in range(3)] == [5, 6, 7]
    assert [blocked.image_seed(k) for k in range(3)] == [5, 6, 5 + SEED_PAGE]
    neighbour = parse_rows([rec(seed="7", seed_block="2")])[0]  # the next row of a block-2 layout
    seeds = {r.image_seed(k) for r in (blocked, neighbour) for k in range(MAX_SAMPLES)}
    assert len(seeds) == 2 * MAX_SAMPLES and max(seeds) < 2**63


def test_write_then_read_round_trips(tmp_path):
    rows = parse_rows([rec(shape="square", flames="yes", samples="3", group="g"), rec(seed_block="8")])
    write_prompt_file(tmp_path / "p.csv", rows)
    assert read_prompt_file(tmp_path / "p.csv") == rows
    assert list(tmp_path.iterdir()) == [tmp_path / "p.csv"]  # no temporary left behind


def test_gates_file_in_repo_matches_the_code():
    from erasekit.eval.gates import gate_rows

    assert read_prompt_file(PROMPT_DIR / "gates.csv") == gate_rows()


def test_gate_judging_and_markdown():
    from erasekit.eval.gates import gate_rows, judge, markdown, summary
    from erasekit.eval.scoring import Evaluation, RowScore

    rows = gate_rows(samples=2)
    scores = [RowScore(r.prompt, r.role, r.name, 2, {}, {}, 0.5 if r.name == "class/star" else 1.0) for r in rows]
    results = judge(Evaluation(scores, {}))
    s = summary(results)
    assert s["class"]["passing"] == 9 and s["class"]["min"] == 0.5 and s["character"]["passing"] == 46
    table = markdown(s, results)
    assert "| class | 10 | 95.0 | 50.0 | 90 | 9/10 |" in table and "Below their floor: class/star 50.0%." in table
