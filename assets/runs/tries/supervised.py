# Can the CPU model's encoder read the reacher at all? The same ViT + projector and a linear head trained
# supervised on the state (sin/cos of q1, q2, q1+q2), 400 steps of 64 frames; R^2 on held-out frames.
# Run from the repository root: OMP_NUM_THREADS=1 PYTHONPATH=. python assets/runs/tries/supervised.py
import numpy as np, torch, torch.nn as nn, subjepa as sj
torch.set_num_threads(1); torch.manual_seed(0)
ds = sj.load_dataset("data/reacher-64px"); env = sj.make_env("reacher")
cfg = sj.Config(**{**sj.PRESETS["reacher"], **sj.SMALL})
model = sj.JEPA(cfg)
head = nn.Linear(cfg.dim, 6)
opt = torch.optim.AdamW(list(model.encoder.parameters()) + list(model.projector.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=1e-3)
rng = np.random.default_rng(0)
fit_rows = sj.held_out_rows(ds, 100000, 0, rng, held=False)
test = sj.held_out_rows(ds, 1000, 0, rng)
names, yt = env.observables(ds.states[test])
def frames(rows): return torch.from_numpy(ds.frames[np.sort(rows)]).permute(0, 3, 1, 2)[:, None]
for step in range(400):
    rows = np.sort(rng.choice(fit_rows, 64))
    y = torch.tensor(env.observables(ds.states[rows])[1], dtype=torch.float32)
    loss = ((head(model.encode(frames(rows))[:, 0]) - y) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 100 == 99:
        with torch.no_grad(): p = head(model.encode(frames(test))[:, 0]).numpy()
        r2 = 1 - ((yt - p) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
        print(step + 1, round(loss.item(), 4), dict(zip(names, np.round(r2, 2))), flush=True)
