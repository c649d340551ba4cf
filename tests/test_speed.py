"""SPEED: the null-space closed form solves what it claims (checked against a direct constrained least
squares), leaves the preserved states and the invariants where they were, erases many concepts in one
solve, and refuses a preserve set that leaves no null space."""

import re

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.methods.speed import null_space_edit
from erasekit.models.layers import kv_projections
from erasekit.primitives.run import RunContext


def test_the_edit_is_the_constrained_least_squares_solution():
    torch.manual_seed(0)
    d, out = 12, 5
    weight = torch.randn(out, d, dtype=torch.float64)
    targets, anchors = torch.randn(3, d, dtype=torch.float64), torch.randn(3, d, dtype=torch.float64)
    retain = torch.randn(4, d, dtype=torch.float64) * 3
    k2 = torch.randn(d, 2, dtype=torch.float64)
    moments = (targets.T @ targets / 3, anchors.T @ targets / 3)
    config = make_config(get_method("speed"), {"threshold": 1e-6, "retain_scale": 0.1})
    delta = null_space_edit(weight, moments, retain, k2, config)
    # direct: ΔW = X Qᵀ over the null space Q of the retain states, min mean‖ΔW c − W(c* − c)‖² + α‖ΔW‖², ΔW K₂ = 0
    values, vectors = torch.linalg.eigh(retain.T @ retain / 4)
    q = vectors[:, values < 1e-6]
    # vec(X Qᵀ c) = (cᵀQ ⊗ I) vec(X): stack the normal equations with the constraint's Lagrange multipliers
    rows = q.shape[1] * out
    hessian = torch.kron(
        q.T @ moments[0] @ q + 0.1 * torch.eye(q.shape[1], dtype=torch.float64), torch.eye(out, dtype=torch.float64)
    )
    gradient = (weight @ (moments[1] - moments[0]) @ q).T.reshape(-1)
    constraint = torch.kron((q.T @ k2).T.contiguous(), torch.eye(out, dtype=torch.float64))
    kkt = torch.zeros(rows + constraint.shape[0], rows + constraint.shape[0], dtype=torch.float64)
    kkt[:rows, :rows], kkt[:rows, rows:], kkt[rows:, :rows] = hessian, constraint.T, constraint
    solution = torch.linalg.solve(kkt, torch.cat([gradient, torch.zeros(constraint.shape[0], dtype=torch.float64)]))
    expected = solution[:rows].reshape(q.shape[1], out).T @ q.T
    assert torch.allclose(delta, expected, atol=1e-9)
    assert torch.allclose(delta @ retain.T, torch.zeros(out, 4, dtype=torch.float64), atol=1e-9)  # preserved: untouched
    assert torch.allclose(delta @ k2, torch.zeros(out, 2, dtype=torch.float64), atol=1e-9)  # IEC held exactly at λ = 0


def test_speed_edits_the_values_sends_the_concepts_to_their_anchor_and_keeps_the_preserved(pipe):
    spec = EraseSpec(("square", "star"), ("", ""), ("circle", "heart"))
    edit = erase(pipe, spec, "speed", retain_scale=0.01, aug_num=0, progress=False)
    projections = kv_projections(pipe.unet)
    assert set(edit.weights) == {f"{name}.weight" for name in projections if name.endswith("to_v")}
    cache = RunContext(pipe, progress=False).cache

    def last_word(prompt: str) -> torch.Tensor:
        return cache.states([prompt])[0, cache.length(prompt) - 2].double()

    sot, kept = last_word(""), last_word("circle")
    for name, weight in edit.weights.items():
        w0, w = projections[name.removesuffix(".weight")].weight.detach().double(), weight.double()
        for concept in ("square", "star"):
            c = last_word(concept)
            assert (w @ c - w0 @ sot).norm() < 0.35 * (w0 @ c - w0 @ sot).norm()
        assert (w @ kept - w0 @ kept).norm() < 1e-3 * (w0 @ kept).norm()  # in the retain span: exactly kept
        assert (w @ sot - w0 @ sot).norm() < 1e-3 * (w0 @ sot).norm()  # the invariant [SOT]/[CLS]


def test_a_preserve_set_that_fills_the_text_space_is_refused_in_one_line():
    torch.manual_seed(0)
    retain = torch.randn(50, 12, dtype=torch.float64)  # 50 states span all 12 directions, each well above τ
    config = make_config(get_method("speed"), {"threshold": 1e-3})
    eye = torch.eye(12, dtype=torch.float64)
    with pytest.raises(ErasekitError, match="^" + re.escape("the preserve set leaves no null space at threshold τ = 0.001")):
        null_space_edit(torch.randn(5, 12, dtype=torch.float64), (eye, eye), retain, eye[:, :1], config)
    with pytest.raises(ErasekitError, match="threshold"):
        make_config(get_method("speed"), {"threshold": -0.1})


def test_the_full_span_erases_every_token_of_the_concept_and_keeps_every_token_of_the_preserved(pipe):
    edit = erase(pipe, EraseSpec(("square",), preserve=("circle",)), "speed", token_span="full", aug_num=0, threshold=1e-6,
                 retain_scale=1e-3, progress=False)  # fmt: skip
    cache = RunContext(pipe, progress=False).cache
    kept, erased = cache.states(["circle"])[0].double(), cache.states(["square"])[0].double()
    span = cache.word_span("square", "square")
    projections = kv_projections(pipe.unet)
    for name, weight in edit.weights.items():
        w0 = projections[name.removesuffix(".weight")].weight.detach().double()
        delta = weight.double() - w0
        assert (kept @ delta.T).norm() < 1e-6 * (kept @ w0.T).norm()  # every token of the kept prompt, [EOS] and padding too
        assert (erased[span.start] @ delta.T).norm() > 0.1 * (erased[span.start] @ w0.T).norm()  # the concept's own token moves
