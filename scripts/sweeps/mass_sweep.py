"""Mass sweep: erase the roster's first COUNT characters keeping the last 20; print Acc_e, Acc_s, H_c."""

import json
import sys
import time

from erasekit.concepts import EraseSpec
from erasekit.eval.protocols import character_metrics, evaluate_rows, mass_character_rows
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline
from erasekit.world import vocabulary as V
from erasekit.world.evaluator import load_world_evaluator

pipe = load_pipeline()
ev = load_world_evaluator()
originals = {}
method = sys.argv[1]
count = int(sys.argv[2])
samples = int(sys.argv[3])
half = len(V.ROSTER_NAMES) // 2
targets, keep = V.ROSTER_NAMES[:count], V.ROSTER_NAMES[half:]
for arg in sys.argv[4:]:
    settings = json.loads(arg)
    t = time.time()
    edit = erase(pipe, EraseSpec(targets, preserve=keep), method, progress=False, **settings)
    secs = time.time() - t
    r = evaluate_rows(pipe, edit, mass_character_rows(targets, keep, samples), character_metrics, ev, None, False, originals)
    m = r.metrics["erased"]["accuracy"]
    print(
        f"{method} n={count} {arg:60s} "
        + " ".join(f"{k}={100 * v:5.1f}" for k, v in m.items())
        + f" fid={r.world_fid_kept:.2f} s={secs:.0f}",
        flush=True,
    )
