# Can the CPU model's encoder read pushT's block angle at all? The same ViT + projector and a linear head trained
# supervised on the standardized state (sin/cos of the angle), 1000 steps of 64 frames, 2 threads; R^2 on held-out frames.
# Run from the repository root: PYTHONPATH=. python assets/runs/tries/supervised_pushT.py [DATA PATCH POS_STD]
# (none: data/pushT-64px 8 0.02, supervised_pushT.log; data/pushT-96px 12 0.02: _96px_p12.log; data/pushT-64px 8 1: _pos1.log)
import os, sys
import numpy as np, torch, torch.nn as nn, subjepa as sj
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2))); torch.manual_seed(0)
data, patch, pos_std = sys.argv[1:4] if len(sys.argv) > 1 else ("data/pushT-64px", "8", "0.02")
ds = sj.load_dataset(data); env = sj.make_env("pushT")
cfg = sj.Config(**{**sj.PRESETS["pushT"], **sj.SMALL, "img": ds.meta["img"], "patch": int(patch), "pos_std": float(pos_std)})
model = sj.JEPA(cfg)
rng = np.random.default_rng(0)
fit_rows = sj.held_out_rows(ds, 100000, 0, rng, held=False)
test = sj.held_out_rows(ds, 1000, 0, rng)
names, yt = env.observables(ds.states[test])
_, yf = env.observables(ds.states[fit_rows[:5000]]); mu, sd = yf.mean(0), yf.std(0)
head = nn.Linear(cfg.dim, len(names))
opt = torch.optim.AdamW(list(model.encoder.parameters()) + list(model.projector.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=1e-3)
def frames(rows): return torch.from_numpy(ds.frames[np.sort(rows)]).permute(0, 3, 1, 2)[:, None]
for step in range(1000):
    rows = np.sort(rng.choice(fit_rows, 64))
    y = torch.tensor((env.observables(ds.states[rows])[1] - mu) / sd, dtype=torch.float32)
    loss = ((head(model.encode(frames(rows))[:, 0]) - y) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 100 == 99:

        with torch.no_grad(): p = head(model.encode(frames(test))[:, 0]).numpy() * sd + mu

        r2 = 1 - ((yt - p) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
        print(step + 1, round(loss.item(), 4), dict(zip(names, np.round(r2, 2).tolist())), flush=True)
