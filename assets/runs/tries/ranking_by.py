# Which distance does a model's planning cost follow? `plan.py --prediction` scores the cost's ranking of plan
# pairs against the world's distance to the goal (its success test). This runs it against a part of the state
# instead: for the cube the gripper's position, or the gripper's and the cube's together; for pushT the
# agent's position, the block's, or the block's angle. (Since then `plan.py --prediction` prints the ranking by each
# part of `parts` of each world, to the same figures; the gripper and the cube together is only here.)
#   PYTHONPATH=. python assets/runs/tries/ranking_by.py PART plan.py --env ENV --ckpt CKPT --prediction --no-plan
import runpy, sys
import numpy as np, subjepa as sj

PARTS = {  # (world, the part's distance to the goal: any scale, only the order counts)
    "gripper": (sj.Cube, lambda s, g: np.linalg.norm(s[0:3] - g[0:3])),
    "both": (sj.Cube, lambda s, g: np.linalg.norm(np.r_[s[0:3] - g[0:3], s[6:9] - g[6:9]])),
    "agent": (sj.PushT, lambda s, g: np.linalg.norm(s[0:2] - g[0:2])),
    "block": (sj.PushT, lambda s, g: np.linalg.norm(s[2:4] - g[2:4])),
    "angle": (sj.PushT, lambda s, g: abs(sj.wrap(s[4] - g[4]))),
}
world, part = PARTS[sys.argv[1]]
world.distance = lambda self, state, goal: float(part(np.asarray(state), np.asarray(goal)))
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
