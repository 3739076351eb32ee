# Does the model predict where things go? From held-out starts, the model's embedding 5 blocks ahead under the
# data's own actions, read by the linear probe (ridge, fit on training frames' embeddings), against the state
# 25 steps later; beside it the same probe on the encoded true frame. R^2 per quantity, over all starts and over
# those where the cube (or block) moved more than 4 cm (40 units) in the 25 steps.
#   PYTHONPATH=. python assets/runs/tries/predicted_state.py ENV CKPT [DATA]
import sys, numpy as np, torch, subjepa as sj
env_name, path = sys.argv[1], sys.argv[2]
ds = sj.load_dataset(sys.argv[3] if len(sys.argv) > 3 else f"data/{env_name}-64px")
model, ck = sj.load_model(path, env=env_name)
env, rng = sj.make_env(env_name, ds.meta["img"]), np.random.default_rng(1)
F, A, L = model.cfg.frameskip, model.cfg.action_dim, 25
mean, std = (np.array(ck[k], np.float32) for k in ("action_mean", "action_std"))
fit = sj.held_out_rows(ds, 2000, 0, rng, held=False)
names, y_fit = env.observables(ds.states[fit])
z_fit = sj.embed(model, ds.frames[fit])
s = sj.held_out_rows(ds, 1000, L, rng)
z0 = torch.tensor(sj.embed(model, ds.frames[s]), dtype=torch.float32)[:, None]
with torch.no_grad():
    b = torch.tensor((ds.actions[s[:, None] + np.arange(L)] - mean) / std, dtype=torch.float32).reshape(len(s), 5, F * A)
    z_hat = model.rollout(z0, b)[:, -1].double().numpy()
z_true = sj.embed(model, ds.frames[s + L])
y = env.observables(ds.states[s + L])[1]
obj = {"cube": slice(6, 9), "pushT": slice(2, 4)}.get(env_name)
moved = np.linalg.norm(ds.states[s + L, obj] - ds.states[s, obj], axis=1) > (0.04 if env_name == "cube" else 40) if obj else np.ones(len(s), bool)
for name, rows in (("all starts", np.ones(len(s), bool)), ("the object moved", moved)):
    pred = sj.ridge_r2(z_fit, y_fit, z_hat[rows], y[rows])
    true = sj.ridge_r2(z_fit, y_fit, z_true[rows], y[rows])
    print(f"{env_name} {path}, {name} ({rows.sum()}): R^2 of the probe on the predicted embedding (on the true frame's): "
          + ", ".join(f"{n} {p:.2f} ({q:.2f})" for n, p, q in zip(names, pred, true)))
