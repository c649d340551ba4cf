"""Scoring generated images against their prompt rows with a judge (the world evaluator, CLIP, ...)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from erasekit.errors import ErasekitError
from erasekit.eval.generation import Generated
from erasekit.eval.prompts import PromptRow
from erasekit.judges import Judge, Reading
from erasekit.world.evaluator import WorldEvaluator


@dataclass
class RowScore:
    """A prompt row's scores over its ``samples`` images: per head, ``accuracy`` (the fraction whose top-1
    label is the expected one) and ``probability`` (the expected label's mean probability), and ``match``,
    the fraction with every expected label right."""

    prompt: str
    role: str
    group: str
    samples: int
    accuracy: dict[str, float]  # head → fraction of images whose top-1 label is the expected one
    probability: dict[str, float]  # head → mean probability of the expected label (MACE-style)
    match: float  # fraction of images with every expected label right


@dataclass
class Evaluation:
    """Every row's scores, each head's top-1 ``predictions`` for every image, and the judge's ``reading``."""

    rows: list[RowScore]
    predictions: dict[str, list[str]]  # head → top-1 label of every image
    reading: Reading | None = field(default=None, repr=False)  # the judge's probabilities and features

    def by(self, key: str) -> dict[str, float]:
        """Mean ``match`` over the rows sharing ``key`` ("role" or "group"), rows weighted by samples."""
        groups: dict[str, list[RowScore]] = {}
        for r in self.rows:
            groups.setdefault(getattr(r, key), []).append(r)
        return {k: float(np.average([r.match for r in rs], weights=[r.samples for r in rs])) for k, rs in groups.items()}

    def to_json(self) -> dict:
        """Match by role and by group, and every row's scores, as JSON-ready dicts."""
        return {"by_role": self.by("role"), "by_group": self.by("group"), "rows": [asdict(r) for r in self.rows]}


def as_judge(judge: Judge | WorldEvaluator) -> Judge:
    """A judge; a bare world evaluator (the API before judges) is wrapped as the world judge."""
    if isinstance(judge, WorldEvaluator):
        from erasekit.judges.world import WorldJudge

        return WorldJudge(judge)
    return judge


def score(generated: Generated, rows: list[PromptRow], judge: Judge | WorldEvaluator) -> Evaluation:
    """Per-row accuracy and expected-class probability, for every head the row names."""
    judge = as_judge(judge)
    reading = judge.read(generated.images)
    results = []
    for i, row in enumerate(rows):
        idx = np.flatnonzero(generated.row_index == i)
        if len(idx) == 0:
            continue
        correct = np.ones(len(idx), bool)
        accuracy, probability = {}, {}
        for head, label in row.expected.items():
            if head not in reading.heads or label not in reading.heads[head]:
                raise ErasekitError(f"the {judge.name} judge cannot read {head}={label!r} (row {row.prompt!r}); "
                                    f"its heads: {', '.join(reading.heads)}")  # fmt: skip
            k = reading.heads[head].index(label)
            hit = reading.probs[head][idx].argmax(1) == k
            correct &= hit
            accuracy[head] = float(hit.mean())
            probability[head] = float(reading.probs[head][idx, k].mean())
        results.append(RowScore(row.prompt, row.role, row.name, len(idx), accuracy, probability, float(correct.mean())))
    return Evaluation(results, {h: reading.label(h) for h in reading.heads}, reading)
