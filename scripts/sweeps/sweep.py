"""Quick sweep: erase one or more concepts with settings, run the object protocol, print metrics.

    python scripts/sweeps/sweep.py METHOD CONCEPTS SAMPLES '{"setting": value, "_preserve": [...], "_anchor": "..."}' ...

With SWEEP_JSON=FILE each row is also appended to FILE as a JSON line (the README's sweep tables);
MODEL=erasekit-tiny-flux (or any model erasekit loads) sweeps on that model instead of erasekit-tiny.
"""

import json
import os
import sys
import time

from erasekit.concepts import EraseSpec
from erasekit.eval.protocols import run_protocol
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline
from erasekit.world.evaluator import load_world_evaluator

MODEL = os.environ.get("MODEL")
pipe = load_pipeline(MODEL)
ev = load_world_evaluator()
originals = {}

PROTOCOL = os.environ.get("PROTOCOL", "object")
method = sys.argv[1]
concepts = sys.argv[2].split(",")
samples = int(sys.argv[3])
for arg in sys.argv[4:]:
    settings = json.loads(arg)
    preserve = settings.pop("_preserve", [])
    anchor = settings.pop("_anchor", "")
    for c in concepts:
        t = time.time()
        spec = EraseSpec((c,), (anchor,), preserve=tuple(p for p in preserve if p != c))
        edit = erase(pipe, spec, method, progress=False, **settings)
        secs = time.time() - t
        r = run_protocol(pipe, edit, PROTOCOL, c, ev, samples, None, False, original_cache=originals)
        m = r.metrics["erased"]["accuracy"]
        print(
            f"{c:9s} {arg:60s} "
            + " ".join(f"{k}={100 * v:5.1f}" for k, v in m.items())
            + f" fid={r.world_fid_kept:.2f} s={secs:.0f}",
            flush=True,
        )
        if os.environ.get("SWEEP_JSON"):
            row = {"method": method, "concept": c, "settings": arg, "samples": samples, "accuracy": m,
                   "world_fid_kept": r.world_fid_kept, "seconds": round(secs, 2), **({"model": MODEL} if MODEL else {})}  # fmt: skip
            with open(os.environ["SWEEP_JSON"], "a") as f:
                f.write(json.dumps(row) + "\n")
