import os, sys, time
import torch
sys.path.insert(0, os.getcwd())
import subjepa as sj
EP = sj.EppsPulley
L, B, M, n = 128, 32, 512, 16
torch.manual_seed(0)
h = torch.randn(L, B, M)
hT = h.transpose(1, 2).contiguous()
dt = 3 / 16
def powersT(h, dt, n):
    e = EP.cis(dt * h, n)
    return torch.stack([torch.stack([c.mean(-1) for c, _ in e]), torch.stack([s.mean(-1) for _, s in e])])
opts = {"cpp.max_horizontal_fusion_size": 64}
f = torch.compile(EP.powers, dynamic=False, options=opts)
g = torch.compile(powersT, dynamic=False, options=opts)
t0 = time.perf_counter(); ref = f(h, dt, n); print("compile f", time.perf_counter() - t0)
t0 = time.perf_counter(); out = g(hT, dt, n); print("compile g", time.perf_counter() - t0)
print("err", (out - ref).abs().max().item())
def t(fn, *args, r=20):
    t0 = time.perf_counter()
    for _ in range(r): fn(*args)
    return 1000 * (time.perf_counter() - t0) / r
for rnd in range(4):
    print(rnd, "powers", round(t(f, h, dt, n), 2), "powersT", round(t(g, hT, dt, n), 2), flush=True)
