"""Mass erasure with an explicit anchor: H_c and the share of erased portraits that show flames."""

import json
import sys
import time

import numpy as np

from erasekit.concepts import EraseSpec
from erasekit.eval.protocols import character_metrics, evaluate_rows, mass_character_rows
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline
from erasekit.world import vocabulary as V
from erasekit.world.evaluator import load_world_evaluator, predict

pipe = load_pipeline()
ev = load_world_evaluator()
originals = {}
method = sys.argv[1]
count = int(sys.argv[2])
samples = int(sys.argv[3])
half = len(V.ROSTER_NAMES) // 2
targets, keep = V.ROSTER_NAMES[:count], V.ROSTER_NAMES[half:]
rows = mass_character_rows(targets, keep, samples)
erased_rows = [i for i, r in enumerate(rows) if r.role == "erase"]
for arg in sys.argv[4:]:
    settings = json.loads(arg)
    anchor = settings.pop("_anchor", "")
    t = time.time()
    edit = erase(pipe, EraseSpec(targets, anchors=(anchor,), preserve=keep), method, progress=False, **settings)
    secs = time.time() - t
    r = evaluate_rows(pipe, edit, rows, character_metrics, ev, None, False, originals)
    m = r.metrics["erased"]["accuracy"]
    flames = {}
    for which in ("original", "erased"):
        g = r.images[which]
        sel = np.isin(g.row_index, erased_rows)
        flames[which] = float(np.mean([lab == "yes" for lab in predict(ev, g.images[sel]).label("flames")]))
    print(
        f"{method} n={count} anchor={anchor!r} {json.dumps(settings)} "
        + " ".join(f"{k}={100 * v:5.1f}" for k, v in m.items())
        + f" flames_on_erased={100 * flames['erased']:.1f} (was {100 * flames['original']:.1f}) fid={r.world_fid_kept:.2f} s={secs:.0f}",
        flush=True,
    )
