import os
import sys, time, torch
sys.path.insert(0, os.getcwd())
import subjepa as sj
small = sys.argv[1] == "small"
cfg = sj.Config(**{**sj.PRESETS["twoRoom"], **(sj.SMALL if small else {}), "img": 64, "patch": 8, "action_dim": 2})
torch.manual_seed(0)
model = sj.JEPA(cfg).eval()
for p in model.parameters(): p.data.normal_(0, 0.05)
E, S = (50, 300) if small else (4, 300)
D = cfg.dim
z0 = torch.randn(E, 1, D); zg = torch.randn(E, 1, D)
plans = torch.randn(E, S, 5, 10)
def chunked(rows):
    z = z0.repeat_interleave(S, 0); p = plans.flatten(0, 1)
    return torch.cat([model.rollout(z[i:i + rows], p[i:i + rows])[:, -1] for i in range(0, len(z), rows)])
sizes = [int(a) for a in sys.argv[2:]]
with torch.no_grad():
    ref = chunked(E * S)
    for n in sizes:
        assert torch.equal(chunked(n), ref), n
    def t(f, r=3):
        t0 = time.perf_counter()
        for _ in range(r): f()
        return 1000 * (time.perf_counter() - t0) / r
    for rnd in range(3):
        print(rnd, {n: round(t(lambda: chunked(n))) for n in sizes}, flush=True)
