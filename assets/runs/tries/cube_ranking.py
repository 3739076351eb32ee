# Which distance does the cube model's planning cost follow? `plan.py --prediction` scores the cost's ranking of
# plan pairs against the world's distance to the goal (the cube's position: the success test). This runs it
# against another distance instead: the gripper's position, or the gripper's and the cube's together.
#   PYTHONPATH=. python assets/runs/tries/cube_ranking.py gripper|both plan.py --env cube --ckpt CKPT --prediction --no-plan
import runpy, sys
import numpy as np, subjepa as sj

which = sys.argv[1]
def distance(self, state, goal):
    s, g = np.asarray(state), np.asarray(goal)
    d = {"gripper": s[0:3] - g[0:3], "both": np.r_[s[0:3] - g[0:3], s[6:9] - g[6:9]]}[which]
    return float(np.linalg.norm(d)) / 0.04
sj.Cube.distance = distance
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
