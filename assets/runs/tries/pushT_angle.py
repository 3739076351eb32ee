"""Does a pushT model's embedding hold the block's angle at all? Linear probes of sin/cos of the angle, twice
and four times it (the bar's axis, the T's near-symmetries), a 5-nearest-neighbour probe of the same, and
how often a held-out frame's nearest neighbour (4000 training frames) has its angle within the pi/9 tolerance.
python assets/runs/tries/pushT_angle.py CKPT [data/pushT-64px]"""
import sys
import numpy as np
import subjepa as sj

model = sj.load_model(sys.argv[1])[0]
ds = sj.load_dataset(sys.argv[2] if len(sys.argv) > 2 else "data/pushT-64px")
rng = np.random.default_rng(0)
fit, test = sj.held_out_rows(ds, 4000, 0, rng, held=False), sj.held_out_rows(ds, 2000, 0, rng)
obs = lambda th: np.column_stack([f(k * th) for k in (1, 2, 4) for f in (np.sin, np.cos)])
names = [f"{f} {k}a" for k in (1, 2, 4) for f in ("sin", "cos")]
zf, zt = sj.embed(model, ds.frames[fit]), sj.embed(model, ds.frames[test])
yf, yt = obs(ds.states[fit, 4]), obs(ds.states[test, 4])
print("linear   ", dict(zip(names, np.round(sj.ridge_r2(zf, yf, zt, yt), 3).tolist())))
print("neighbours", dict(zip(names, np.round(sj.neighbours_r2(zf, yf, zt, yt), 3).tolist())))
d = (zt ** 2).sum(1)[:, None] - 2 * zt @ zf.T + (zf ** 2).sum(1)
near = ds.states[fit[np.argmin(d, 1)], 4]
err = np.abs(sj.wrap(near - ds.states[test, 4])) / (np.pi / 9)
err2 = np.abs(sj.wrap(2 * (near - ds.states[test, 4]))) / 2 / (np.pi / 9)
print(f"nearest neighbour's angle within tolerance: {np.mean(err < 1):.2f} (chance 0.11); modulo pi: "
      f"{np.mean(err2 < 1):.2f} (chance 0.22); median error {np.median(err):.2f} tolerances")
