"""Quick sweep: erase one or more concepts with settings, run the object protocol, print metrics."""

import json
import os
import sys
import time

from erasekit.eval.protocols import run_protocol
from erasekit.methods.base import EraseSpec
from erasekit.methods.runner import erase
from erasekit.models.evaluators import load_world_evaluator
from erasekit.models.loading import load_pipeline

pipe = load_pipeline()
ev = load_world_evaluator()
originals = {}

PROTOCOL = os.environ.get("PROTOCOL", "object")
method = sys.argv[1]
concepts = sys.argv[2].split(",")
samples = int(sys.argv[3])
for arg in sys.argv[4:]:
    settings = json.loads(arg)
    preserve = settings.pop("_preserve", [])
    for c in concepts:
        t = time.time()
        edit = erase(pipe, EraseSpec((c,), preserve=tuple(p for p in preserve if p != c)), method, progress=False, **settings)
        secs = time.time() - t
        r = run_protocol(pipe, edit, PROTOCOL, c, ev, samples, None, False, original_cache=originals)
        m = r["metrics"]["erased"]["accuracy"]
        print(
            f"{c:9s} {arg:60s} "
            + " ".join(f"{k}={100 * v:5.1f}" for k, v in m.items())
            + f" fid={r['world_fid_kept']:.2f} s={secs:.0f}",
            flush=True,
        )
