import numpy as np
import pytest

from erasekit.errors import ErasekitError
from erasekit.eval.protocols import (
    PROMPT_FILE_PROTOCOLS,
    PROTOCOLS,
    artist_metrics,
    artist_rows,
    character_metrics,
    character_rows,
    flames_metrics,
    flames_rows,
    object_metrics,
    object_rows,
    protocol_rows,
    quality_rows,
)
from erasekit.eval.protocols.seeds import ALL_PROMPTS
from erasekit.eval.scoring import Evaluation, RowScore


def fake_evaluation(rows, accuracy_by_role):
    scores = []
    for r in rows:
        head = next(iter(r.expected))
        acc = accuracy_by_role[r.role]
        scores.append(RowScore(r.prompt, r.role, r.name, r.samples, {head: acc}, {head: acc * 0.9}, acc))
    return Evaluation(scores, {})


def test_object_rows_cover_the_protocol_with_stable_seeds():
    rows = object_rows("square", samples=4)
    roles = [r.role for r in rows]
    assert (
        roles.count("erase") == 1
        and roles.count("synonym") == 3
        and roles.count("retain") == 9
        and roles.count("associated") == 1
    )
    # the prompt "a photo of a heart" has the same seeds whatever is erased
    heart = {r.prompt: r.seed for r in object_rows("circle", samples=4)}["a photo of a heart"]
    assert heart == {r.prompt: r.seed for r in rows}["a photo of a heart"]
    assert len({r.seed for r in rows}) == len(rows)


def test_object_metrics_and_harmonic_mean():
    rows = object_rows("square", samples=4)
    metrics = object_metrics(fake_evaluation(rows, {"erase": 0.1, "synonym": 0.4, "retain": 0.9, "associated": 0.2}))
    acc = metrics["accuracy"]
    assert acc["Acc_e"] == pytest.approx(0.1) and acc["Acc_g"] == pytest.approx(0.4) and acc["residue"] == pytest.approx(0.2)
    assert acc["H_o"] == pytest.approx(3 / (1 / 0.9 + 1 / 0.9 + 1 / 0.6))
    assert metrics["probability"]["Acc_s"] == pytest.approx(0.81)


def test_character_protocol():
    rows = character_rows("Captain Nova", samples=2)
    assert [r.role for r in rows].count("retain") == 5 and any(r.role == "associated" for r in rows)
    m = character_metrics(fake_evaluation(rows, {"erase": 0.0, "retain": 1.0, "associated": 0.5}))["accuracy"]
    assert m["H_c"] == pytest.approx(1.0) and m["residue"] == 0.5
    assert np.isclose(
        character_metrics(fake_evaluation(rows, {"erase": 1.0, "retain": 1.0, "associated": 1.0}))["accuracy"]["H_c"], 0.0
    )


def test_unknown_targets():
    with pytest.raises(ErasekitError, match="not a shape class"):
        object_rows("pentagon")
    with pytest.raises(ErasekitError, match="not a character"):
        character_rows("Captain Zed")


def test_artist_protocol():
    rows = artist_rows("Anna Varga", samples=2)
    assert [r.role for r in rows].count("erase") == 3 and [r.role for r in rows].count("retain") == 5
    assert all(r.expected == {"artist": "Anna Varga"} for r in rows if r.role != "retain")
    m = artist_metrics(fake_evaluation(rows, {"erase": 0.2, "retain": 0.9, "associated": 0.3}))["accuracy"]
    assert m["gap"] == pytest.approx(0.7) and m["residue"] == pytest.approx(0.3)
    with pytest.raises(ErasekitError, match="not an artist"):
        artist_rows("Pablo")


def test_flames_and_quality_protocols():
    rows = flames_rows(samples=2)
    roles = [r.role for r in rows]
    assert roles.count("erase") == 5 and roles.count("implicit") == 6 and roles.count("retain") == 10
    evaluation = fake_evaluation(rows, {"erase": 0.1, "implicit": 0.3, "retain": 0.95})
    assert flames_metrics(evaluation)["accuracy"] == pytest.approx({"explicit": 0.1, "implicit": 0.3, "Acc_s": 0.95})
    quality = quality_rows()
    assert len(quality) == 80 and all(r.role == "retain" for r in quality)


def test_every_protocol_prompt_has_its_own_seeds():
    assert len(set(ALL_PROMPTS)) == len(ALL_PROMPTS)
    seen = {}
    for protocol in set(PROTOCOLS) - set(PROMPT_FILE_PROTOCOLS):
        target = {"object": "square", "character": "Captain Nova", "artist": "Anna Varga"}.get(protocol, "")
        for r in protocol_rows(protocol, target, 4):
            seen.setdefault(r.prompt, r.seed)
            assert seen[r.prompt] == r.seed
    for r in protocol_rows("object", "cat", 4, world=False):  # MACE's CIFAR-10 prompts have seeds of their own
        seen.setdefault(r.prompt, r.seed)
        assert seen[r.prompt] == r.seed
    with pytest.raises(ErasekitError, match="unknown protocol"):
        protocol_rows("style", "x", 1)
