# Is a failing world's planner short of search or fooled by its model? For the first solve of plan.py's
# episodes (same starts and goals, same CEM and seed), compare the model's cost of the plan CEM returns with
# its cost of the data's own actions, which reach the goal by construction (the goal is where they led):
#   CEM's plan cheaper than the data's, and it misses the goal: the model is fooled (its cost is wrong there);
#   CEM's plan dearer than the data's: the search fell short of a plan the model itself prefers.
#   PYTHONPATH=. python assets/runs/tries/search_or_model.py ENV CKPT [SEED [DATA]]
import sys, numpy as np, torch, subjepa as sj
env_name, path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1
torch.manual_seed(0)
ds = sj.load_dataset(sys.argv[4] if len(sys.argv) > 4 else f"data/{env_name}-64px")
model, ck = sj.load_model(path, env=env_name)
F, A = model.cfg.frameskip, model.cfg.action_dim
mean, std = (np.array(ck[k], np.float32) for k in ("action_mean", "action_std"))
rng = np.random.default_rng(seed)                      # plan.py's episodes for this seed
_, held = sj.split_episodes(len(ds.episodes) - 1)
long_enough = [e for e in held if ds.episodes[e + 1] - ds.episodes[e] > 25]
eps = rng.choice(long_enough, 50)
s = np.array([rng.integers(ds.episodes[e], ds.episodes[e + 1] - 25) for e in eps])
envs = [sj.make_env(env_name, ds.meta["img"]) for _ in s]
to_t = lambda x: torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2)
obs = to_t([e.reset(options=dict(state=ds.states[a], goal=ds.states[a + 25]))[0] for e, a in zip(envs, s)])
goal = to_t([e.render_state(ds.states[a + 25]) for e, a in zip(envs, s)])
data = ds.actions[s[:, None] + np.arange(25)]                                   # (E, 25, A) raw
blocks = lambda raw: torch.tensor((raw - mean) / std, dtype=torch.float32).reshape(len(s), 5, F * A)
with torch.no_grad():
    cem = model.plan(obs, goal, 5, torch.Generator().manual_seed(seed))         # (E, 5, F*A) z-scored
    z0, zg = model.encode(obs[:, None]), model.encode(goal[:, None])
    cost = lambda b: (model.rollout(z0, b)[:, -1] - zg[:, 0]).pow(2).sum(-1).numpy()
    c_data, c_cem = cost(blocks(data)), cost(cem)
    c_start = (z0[:, 0] - zg[:, 0]).pow(2).sum(-1).numpy()                     # doing nothing, as the model sees it
raw_cem = np.clip(cem.numpy().reshape(len(s), 25, A) * std + mean, -1, 1)
with torch.no_grad():   # the plan as executed: clipped to the action space
    c_clip = cost(blocks(raw_cem))
    ends = [e.play(ds.states[a], p) for e, a, p in zip(envs, s, raw_cem)]     # where CEM's plan truly ends
    z_end = model.encode(to_t([e.render_state(x) for e, x in zip(envs, ends)])[:, None])
    c_true = (z_end[:, 0] - zg[:, 0]).pow(2).sum(-1).numpy()                    # its true end, encoded
out = np.abs(cem.numpy().reshape(len(s), 25, A) * std + mean) > 1
d_data = np.array([e.simulate(ds.states[a], p) for e, a, p in zip(envs, s, data)])
d_cem = np.array([e.simulate(ds.states[a], p) for e, a, p in zip(envs, s, raw_cem)])
met = np.array([e.distance(ds.states[a], ds.states[a + 25]) < 1 for e, a in zip(envs, s)])
rest = ~met
cheaper = c_cem <= c_data
print(f"{env_name} {path} seed {seed}: {met.sum()} starts already met; over the other {rest.sum()}:")
print(f"  model cost, median: the start frame's own {np.median(c_start[rest]):.3f}, the data's actions "
      f"{np.median(c_data[rest]):.3f}, CEM's plan {np.median(c_cem[rest]):.3f}")
print(f"  CEM's plan: {100 * out.mean():.0f}% of its actions outside the action space (clipped when executed); "
      f"model cost of the plan as executed (clipped), median {np.median(c_clip[rest]):.3f}")
print(f"  CEM's plan's true end, encoded: cost median {np.median(c_true[rest]):.3f} (predicted {np.median(c_cem[rest]):.3f})")
print(f"  true distance after 25 steps (tolerances), median: data's actions {np.median(d_data[rest]):.2f}, "
      f"CEM's plan {np.median(d_cem[rest]):.2f}; CEM's plan within tolerance {(d_cem[rest] < 1).sum()}")
print(f"  CEM's plan cheaper than the data's: {(cheaper & rest).sum()}, of which it misses the goal (model fooled): "
      f"{(cheaper & rest & (d_cem >= 1)).sum()}")
print(f"  CEM's plan dearer than the data's (search short): {(~cheaper & rest).sum()}, of which it misses: "
      f"{(~cheaper & rest & (d_cem >= 1)).sum()}")
