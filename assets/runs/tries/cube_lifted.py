# Which cube goals does a model reach? Splits the episodes of a plan.py JSON whose start does not already meet
# its goal by where the cube is at the start: on the table (z < 3 cm) or lifted (in the gripper or falling).
#   PYTHONPATH=. python assets/runs/tries/cube_lifted.py assets/runs/cube-k8-6k.json [more JSON files]
# (DATA=data/cube-varied-64px for the JSON files of models trained on other data)
import json, sys, numpy as np, subjepa as sj
import os
ds, env = sj.load_dataset(os.environ.get("DATA", "data/cube-64px")), sj.make_env("cube")
for path in sys.argv[1:]:
    d = json.load(open(path))
    s, g, closest = np.array(d["start_rows"]), np.array(d["goal_rows"]), np.array(d["closest"])
    met = np.array([env.distance(ds.states[a], ds.states[b]) < 1 for a, b in zip(s, g)])
    lifted = env.observables(ds.states[s])[1][:, 5] > 0.03
    ok = closest < 1
    print(f"{path}: already met {met.sum()} (reached {ok[met].sum()}); cube on the table at the start: reached "
          f"{ok[~met & ~lifted].sum()} of {(~met & ~lifted).sum()}; lifted: {ok[~met & lifted].sum()} of {(~met & lifted).sum()}")
