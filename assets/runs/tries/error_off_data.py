# How wrong is a model on plans unlike its data? From 50 held-out starts (seed 1), the model's predicted
# embedding 5 blocks ahead against the encoded true end frame, relative to the embeddings' spread (as
# --prediction's rollout error at block 5), for the data's own actions, those actions with Gaussian noise
# of growing std added (clipped to the action space), and uniform random plans.
#   PYTHONPATH=. python assets/runs/tries/error_off_data.py ENV CKPT [--by-part]
# (--by-part, the cube: noise on one part of the action at a time: x, y, z; yaw; the gripper's command)
import sys, numpy as np, torch, subjepa as sj
env_name, path = sys.argv[1], sys.argv[2]
ds = sj.load_dataset(f"data/{env_name}-64px")
model, ck = sj.load_model(path, env=env_name)
env, rng = sj.make_env(env_name, ds.meta["img"]), np.random.default_rng(1)
F, A, L = model.cfg.frameskip, model.cfg.action_dim, 25
mean, std = (np.array(ck[k], np.float32) for k in ("action_mean", "action_std"))
s = sj.held_out_rows(ds, 50, L, rng)
data = ds.actions[s[:, None] + np.arange(L)]
z_all = torch.tensor(sj.embed(model, ds.frames[s]), dtype=torch.float32)
spread = float((z_all - z_all.mean(0)).pow(2).sum(-1).mean())
z0 = z_all[:, None]
print(f"{env_name} {path}: action std of the data {np.round(std, 2).tolist()}")
def error(name, plans):
    ends = [env.render_state(env.play(ds.states[i], p)) for i, p in zip(s, plans)]
    z_end = torch.tensor(sj.embed(model, np.stack(ends)), dtype=torch.float32)
    with torch.no_grad():
        b = torch.tensor((plans - mean) / std, dtype=torch.float32).reshape(len(s), 5, F * A)
        z_hat = model.rollout(z0, b)[:, -1]
    err = ((z_hat - z_end) ** 2).sum(-1).numpy() / spread
    moved = ((z_end - z_all) ** 2).sum(-1).numpy() / spread
    print(f"  {name:>16}: block-5 error {err.mean():.3f} (median {np.median(err):.3f}); true change {moved.mean():.3f}")


if "--by-part" not in sys.argv:
    for name, plans in [("data's actions", data)] + [
            (f"+ noise {n}", np.clip(data + n * rng.normal(size=data.shape), -1, 1)) for n in (0.1, 0.3, 0.6, 1.0)] + [
            ("uniform random", rng.uniform(-1, 1, data.shape))]:
        error(name, plans)
else:
    for dims, part in [([0, 1, 2], "xyz"), ([3], "yaw"), ([4], "grip")]:
        for n in (0.1, 0.3):
            p = data.copy()
            p[..., dims] = np.clip(p[..., dims] + n * rng.normal(size=p[..., dims].shape), -1, 1)
            error(f"noise {n} on {part}", p)
    p = data.copy()
    p[..., 4] = rng.uniform(-1, 1, p[..., 4].shape)
    error("grip uniform", p)
    p[..., 4] = np.sign(rng.uniform(-1, 1, p[..., 4].shape))
    error("grip random sign", p)
