"""Device and dtype: every method runs where the pipeline is and in its precision.

CI has no GPU, so two stand-ins check on the CPU what would break on CUDA: the device guard finds
tensors that erasekit creates without a device (the CPU default that crashes next to a CUDA
model), and fp16/bf16 pipelines, which the CPU computes, show that training in half precision
gives finite edits (Adam on fp16 weights gave NaN).
"""

import subprocess
import sys

import pytest
import torch
from device_guard import DeviceGuard
from quick_settings import ALGORITHMS, QUICK, SPEC, one_half_precision_in_ci, sd_methods, spec_for

from erasekit.edits import pipeline_parameters
from erasekit.errors import ErasekitError
from erasekit.methods import METHODS
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline, resolve_device, resolve_dtype
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fit, float32_parameters


def test_every_registered_method_has_a_device_check():
    assert set(QUICK) == sd_methods()  # the others: tests/test_family_layouts.py
    assert {METHODS[m].erase for m in ALGORITHMS} == {METHODS[m].erase for m in sd_methods()}


@pytest.mark.parametrize("method", ALGORITHMS)
def test_methods_create_no_tensor_without_a_device(pipe, method):
    with DeviceGuard() as guard:
        edit = erase(pipe, spec_for(method), method, progress=False, **QUICK[method])
        with edit.applied(pipe) as erased:
            erased("a photo of a square", num_inference_steps=2, output_type="np")
    assert not guard.hidden, f"{method} creates tensors on the default device at {sorted(guard.hidden)}"


def test_the_device_guard_catches_a_hidden_cpu_default():
    from erasekit.primitives import closed_form

    with DeviceGuard() as guard:
        closed_form.TextMoments(torch.eye(3), torch.eye(3))  # created here, in the tests: not erasekit's code
        exec(compile("import torch\ntorch.eye(3)", closed_form.__file__, "exec"))  # as if written in erasekit
    assert guard.hidden == {"closed_form.py:2"}


@pytest.fixture(scope="module")
def half_pipe(request, embedded_dir):
    return load_pipeline(embedded_dir, request.param, "cpu")


@pytest.mark.parametrize(
    "method, half_pipe",
    one_half_precision_in_ci([(m,) for m in ALGORITHMS], [("fp16", "fp16"), ("bf16", "bf16")]),
    indirect=["half_pipe"],
)
def test_half_precision_gives_finite_edits_and_leaves_the_pipeline_as_it_was(half_pipe, method):
    dtype = half_pipe.unet.dtype
    before = {n: p.detach().clone() for n, p in pipeline_parameters(half_pipe).items()}  # UNet and text encoder
    edit = erase(half_pipe, spec_for(method), method, progress=False, **QUICK[method])
    assert edit.card["dtype"] == str(dtype).removeprefix("torch.")
    for name, value in edit.weights.items():
        assert value.dtype == dtype and torch.isfinite(value).all(), name
    assert any(not torch.equal(before[n], v) for n, v in edit.weights.items()) == METHODS[method].changes_weights
    after = pipeline_parameters(half_pipe)
    assert all(after[n].dtype == dtype and torch.equal(after[n], v) for n, v in before.items())
    with edit.applied(half_pipe) as erased:
        image = erased("a photo of a square", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(torch.from_numpy(image)).all()
    for name, value in edit.adapters.items():  # SPM's factors, Receler's erasers
        assert value.dtype == dtype and torch.isfinite(value).all(), name


def test_fp16_training_runs_in_float32_and_refuses_a_non_finite_loss():
    layer = torch.nn.Linear(4, 4).half().requires_grad_(False)
    run = RunContext.__new__(RunContext)  # only device and dtype matter to fit
    run.device, run.dtype, run.progress, run.callback = torch.device("cpu"), torch.float16, False, None
    x = torch.randn(8, 4, dtype=torch.float16)
    with float32_parameters(layer.parameters()) as params:
        assert all(p.dtype == torch.float32 and p.requires_grad for p in params)
        optimizer = torch.optim.Adam(params, lr=1e-2)
        losses = fit(run, params, lambda _: layer(x).float().pow(2).mean(), 20, optimizer, "test")
        assert losses[-1] < losses[0]
        with pytest.raises(ErasekitError, match="the loss became nan at step 1"):
            fit(run, params, lambda _: layer(x).float().sum() * float("nan"), 3, optimizer, "test")
    assert all(p.dtype == torch.float16 and not p.requires_grad for p in layer.parameters())


def test_device_and_dtype_flags_are_checked():
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype("float16") == torch.float16
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ErasekitError, match="unknown dtype 'fp8'; use fp32, fp16 or bf16"):
        resolve_dtype("fp8")
    with pytest.raises(ErasekitError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ErasekitError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    "command, flags, message, not_imported",
    [  # a flag's form is the command line's to refuse, before torch; a device this machine lacks, before diffusers
        (["erase", "square"], ["--dtype", "fp8"], "unknown dtype 'fp8'", "torch"),
        (["erase", "square"], ["--device", "tpu"], "unknown device 'tpu'", "torch"),
        (["bench", "--method", "uce"], ["--dtype", "half-ish"], "unknown dtype 'half-ish'", "torch"),
        (["gates"], ["--device", "cuda:x"], "unknown device 'cuda:x'", "torch"),
        pytest.param(
            ["erase", "square"],
            ["--device", "cuda"],
            "CUDA is not available",
            "diffusers",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
        (["generate", "demo.csv", "--model", "./nowhere"], [], "model directory nowhere does not exist", "diffusers"),
    ],
)
def test_bad_device_dtype_or_model_is_one_line_at_once_and_writes_nothing(tmp_path, command, flags, message, not_imported):
    (tmp_path / "demo.csv").write_text("prompt,seed,role\na photo of a square,0,erase\n")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "erasekit.cli", *command, "--out", str(tmp_path / "out"), *flags],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    error = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and len(error) == 1 and message in error[0], error
    assert not (tmp_path / "out").exists()
    assert not_imported not in imported  # refused before the library that would take seconds to load


def test_progress_callback_sees_every_step(pipe):
    calls = []
    erase(pipe, SPEC, "esd-x", progress=False, callback=lambda *step: calls.append(step), iterations=3, sample_steps=3)
    training = [call for call in calls if call[0] != "x_t plan"]
    assert training == [("ESD (esd-x)", 1, 3), ("ESD (esd-x)", 2, 3), ("ESD (esd-x)", 3, 3)]
    plan = [call for call in calls if call[0] == "x_t plan"]  # the sampling before training shows too
    assert plan and plan[-1] == ("x_t plan", 3, 3) and calls.index(plan[-1]) < calls.index(training[0])


def test_a_pipeline_whose_text_states_do_not_fit_its_unet_is_refused(pipe):
    from types import SimpleNamespace

    sdxl_like = SimpleNamespace(  # SDXL's UNet reads 2048-d states made of two text encoders' outputs
        unet=SimpleNamespace(config=SimpleNamespace(cross_attention_dim=2048)),
        text_encoder=SimpleNamespace(config=SimpleNamespace(hidden_size=768)),
    )
    with pytest.raises(ErasekitError, match="768-d states but its UNet's cross-attention reads 2048-d"):
        RunContext(sdxl_like)
