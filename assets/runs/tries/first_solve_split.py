# Which episodes fail: those where the model preferred CEM's first plan to the data's own actions (the model was
# wrong), or those where it preferred the data's (the search fell short)? From plan.py JSON files.
#   python assets/runs/tries/first_solve_split.py RUN.json [more]
import json, sys, numpy as np
for path in sys.argv[1:]:
    d = json.load(open(path))
    f = d["first_solve"]
    short = np.array(f["plan_cost"]) > np.array(f["data_cost"])
    ok = np.array(d["closest"]) < 1
    print(f"{path}: {d['successes']}/{d['episodes']} (CEM {d['cem']['samples']} x {d['cem']['elites']} x {d['cem']['iters']}); "
          f"failures {(~ok).sum()}: search short at the first solve in {(~ok & short).sum()}, the model wrong in "
          f"{(~ok & ~short).sum()}; search short in {short.sum()} episodes, {(ok & short).sum()} of them reached anyway")
