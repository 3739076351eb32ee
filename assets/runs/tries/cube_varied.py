# experiment: cube data that cover more of what a planner tries (taken as the cube's data policy version 2, in its
# training episodes only: `CubePolicy`; this patch runs on the code before it, git checkout 6fea4e9). The recipe's
# model predicts the data's own actions well and plans unlike them badly (error_off_data.py: block-5 error 0.18 on the data's actions, 0.52
# with noise of 0.3 on the gripper's motion, 0.60 on random plans; the reacher, whose data are random torques,
# 0.16 on all). The change to CubePolicy: motion noise drawn per episode in [0.1, 0.5] (was [0.05, 0.3]), and a
# spell of 5-20 random steps (every dimension, the gripper's command too) may start at any step (1.5% a step),
# not only at the start of a fifth of the episodes. Runs a script with the patch applied:
#   PYTHONPATH=. python assets/runs/tries/cube_varied.py collect data/cube-varied-64px
#   PYTHONPATH=. python assets/runs/tries/cube_varied.py train.py --env cube --recipe cpu --data data/cube-varied-64px ...
#   PYTHONPATH=. python assets/runs/tries/cube_varied.py plan.py --env cube --data data/cube-varied-64px ...
# and on the recipe's own episodes (the same goals as the recipe's model; no patch needed to plan):
#   python plan.py --env cube --ckpt runs/e43-cube-varied.pt --data data/cube-64px --seed 1
# (collection in this process: spawned workers would import the unpatched policy)
import runpy, sys
import subjepa as sj

init, call = sj.CubePolicy.__init__, sj.CubePolicy.__call__

def __init__(self, env, rng):
    init(self, env, rng)
    self.noise = rng.uniform(0.1, 0.5)

def __call__(self):
    if self.random_steps == 0 and self.rng.random() < 0.015:
        self.random_steps = int(self.rng.integers(5, 21))
    return call(self)

sj.CubePolicy.__init__, sj.CubePolicy.__call__ = __init__, __call__
sys.argv = sys.argv[1:]
if sys.argv[0] == "collect":
    sj.collect("cube", sys.argv[1], workers=1)   # the dataset's defaults: 2000 episodes of 100 steps, 64 px, seed 0
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
