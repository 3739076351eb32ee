# experiment: pushT data from a slower pusher (half the speed and half the noise of PushTPolicy)
#   PYTHONPATH=. python assets/runs/tries/collect_slow.py data/pushT-slow-64px
import sys, subjepa as sj
class Slow(sj.PushTPolicy):
    def __init__(self, env, rng, held=False):
        super().__init__(env, rng, held); self.noise *= 0.5
    def _plan(self):
        super()._plan(); self.speed *= 0.5
sj.POLICIES["pushT"] = Slow
sj.collect("pushT", sys.argv[1], workers=1)
