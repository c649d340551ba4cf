"""How much of the synonyms' states lie in the kept classes' directions (README, object target).

Prints the number of singular values of the nine kept classes' states (RealEra's twelve default
templates, all positions) above 1 % and 10 % of the largest, and the share of the energy of prompts
naming "plus sign", "medic symbol" and "plus" that falls in their top k directions; then the share of
what sets "cross" and its synonyms apart from the bare template that lies outside those directions.
"""

import torch

from erasekit.methods.realera import RealEraConfig
from erasekit.models.loading import load_pipeline
from erasekit.primitives.prompt_cache import PromptCache

templates = RealEraConfig().prompt_templates
kept = ["circle", "square", "triangle", "star", "heart", "crescent", "arrow", "diamond", "hexagon"]
cache = PromptCache(load_pipeline())
states = cache.states([t.format(s) for s in kept for t in templates])
flat = states.reshape(-1, states.shape[-1]).double()
_, singular, directions = torch.linalg.svd(flat, full_matrices=False)
print("above 1 %:", int((singular > singular[0] * 1e-2).sum()), "above 10 %:", int((singular > singular[0] * 1e-1).sum()))
synonyms = cache.states(["a photo of a plus sign", "a photo of a medic symbol", "plus"]).double().reshape(-1, flat.shape[1])
for k in (20, 50, 100, 200):
    share = (synonyms @ directions[:k].T).norm() ** 2 / synonyms.norm() ** 2
    print(f"top {k}: {float(share):.3f}")

# What tells a phrase apart from the bare template: the share of ‖states("a photo of a X") − states("a photo of a")‖²
# outside the kept classes' directions (singular values ≥ 1 % of the largest), for the class name and its synonyms.
kept_directions = directions[: int((singular > singular[0] * 1e-2).sum())]
bare = cache.states(["a photo of a"]).double()
for label, words in (("name", ["cross"]), ("synonyms", ["plus sign", "plus", "medic symbol"])):
    difference = (cache.states([f"a photo of a {w}" for w in words]).double() - bare).reshape(-1, flat.shape[1])
    outside = difference - difference @ kept_directions.T @ kept_directions
    print(f"{label}: {float(outside.norm() ** 2 / difference.norm() ** 2):.3f} outside the kept directions")
