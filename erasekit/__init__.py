"""erasekit: erase concepts from text-to-image diffusion models and measure how well.

The Python API mirrors the CLI::

    from erasekit import load_pipeline, read_prompt_file, generate, score, load_world_evaluator

    pipe = load_pipeline()                      # the embedded erasekit-tiny model
    rows = read_prompt_file("demo.csv")         # erasekit/prompts/demo.csv
    images = generate(pipe, rows)
    print(score(images, rows, load_world_evaluator()).by("role"))
"""

from erasekit.errors import ErasekitError
from erasekit.eval.generation import Generated, SamplerSettings, generate
from erasekit.eval.prompts import PromptRow, read_prompt_file
from erasekit.eval.scoring import Evaluation, score
from erasekit.models.evaluators import load_world_evaluator
from erasekit.models.loading import load_pipeline

__version__ = "0.1.0"

__all__ = [
    "ErasekitError",
    "Evaluation",
    "Generated",
    "PromptRow",
    "SamplerSettings",
    "generate",
    "load_pipeline",
    "load_world_evaluator",
    "read_prompt_file",
    "score",
]
