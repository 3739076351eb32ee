# experiment: reacher data from the reference's policy: uniform random torques, new each step
#   PYTHONPATH=. python assets/runs/tries/collect_iid.py data/reacher-iid-64px 2000
import sys, numpy as np, subjepa as sj
class IID:
    def __init__(self, env, rng, held=False): self.rng = rng
    def __call__(self): return self.rng.uniform(-1, 1, 2).astype(np.float32)
sj.POLICIES["reacher"] = IID
sj.collect("reacher", sys.argv[1], episodes=int(sys.argv[2]), workers=1)
