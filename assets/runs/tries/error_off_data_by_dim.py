# the cube: error_off_data.py with noise on one part of the action at a time (xyz, yaw, grip); log in error_off_data.log
#   PYTHONPATH=. python assets/runs/tries/error_off_data_by_dim.py
import sys, numpy as np, torch, subjepa as sj
exec(open("assets/runs/tries/error_off_data.py").read().split("for name, plans")[0].replace("sys.argv[1], sys.argv[2]", "'cube', 'runs/e27-cube-k8.pt'"))
def run(name, plans):
    ends = [env.render_state(env.play(ds.states[i], p)) for i, p in zip(s, plans)]
    z_end = torch.tensor(sj.embed(model, np.stack(ends)), dtype=torch.float32)
    with torch.no_grad():
        b = torch.tensor((plans - mean) / std, dtype=torch.float32).reshape(len(s), 5, F * A)
        z_hat = model.rollout(z0, b)[:, -1]
    err = ((z_hat - z_end) ** 2).sum(-1).numpy() / spread
    print(f"  {name:>24}: block-5 error {err.mean():.3f} (median {np.median(err):.3f})")
for dims, nm in [([0,1,2], "xyz"), ([3], "yaw"), ([4], "grip")]:
    for n in (0.1, 0.3):
        p = data.copy(); p[..., dims] = np.clip(p[..., dims] + n * rng.normal(size=p[..., dims].shape), -1, 1)
        run(f"noise {n} on {nm}", p)
p = data.copy(); p[..., 4] = rng.uniform(-1, 1, p[..., 4].shape); run("grip uniform", p)
p = data.copy(); p[..., 4] = np.sign(rng.uniform(-1, 1, p[..., 4].shape)); run("grip random sign", p)
