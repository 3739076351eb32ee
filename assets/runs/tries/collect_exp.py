# The reacher row "the reference's data": collect with uniform random actions drawn anew each step, then train.
# From the repository root (workers=1: spawned workers would not see the patch):
#   PYTHONPATH=. python assets/runs/tries/collect_exp.py reacher iid data/reacher-iid-64px
#   python train.py --env reacher --recipe cpu --steps 1000 --data data/reacher-iid-64px --out runs/e1-reacher-iid.pt
import sys, numpy as np
import subjepa as sj
env, kind, path = sys.argv[1], sys.argv[2], sys.argv[3]
img = int(sys.argv[4]) if len(sys.argv) > 4 else 64

class IID:   # the reference's reacher data: uniform random actions, new each step
    def __init__(self, env, rng, held=False): self.rng = rng
    def __call__(self): return self.rng.uniform(-1, 1, 2).astype(np.float32)

if kind == "iid":
    sj.POLICIES[env] = IID
sj.collect(env, path, img=img, workers=1)
