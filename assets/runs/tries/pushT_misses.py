"""Which part of its goal each pushT episode missed at the end: positions (agent and block, 4-vector norm, in
units of the 20-unit tolerance) and the block's angle (in units of the pi/9 tolerance).
python assets/runs/tries/pushT_misses.py PLAN.json [data/pushT-64px]"""
import json, sys
import numpy as np
import subjepa as sj

r = json.load(open(sys.argv[1]))
ds = sj.load_dataset(sys.argv[2] if len(sys.argv) > 2 else "data/pushT-64px")
final, goal, start = np.array(r["final_states"]), ds.states[r["goal_rows"]], ds.states[r["start_rows"]]
for name, s in (("start", start), ("end", final)):
    pos = np.linalg.norm(s[:, :4] - goal[:, :4], axis=1) / 20
    block = np.linalg.norm(s[:, 2:4] - goal[:, 2:4], axis=1) / 20
    ang = np.abs(sj.wrap(s[:, 4] - goal[:, 4])) / (np.pi / 9)
    print(f"{name:5s}: positions within tolerance {np.sum(pos < 1):2d}/{len(s)}, block position {np.sum(block < 1):2d}, "
          f"angle {np.sum(ang < 1):2d}, both {np.sum((pos < 1) & (ang < 1)):2d} | median positions {np.median(pos):.2f}, "
          f"block {np.median(block):.2f}, angle {np.median(ang):.2f} tolerances")
