import os, sys, time
import torch
sys.path.insert(0, os.getcwd())
import subjepa as sj
EP = sj.EppsPulley
L, B, M, n = 128, 32, 512, 16
torch.manual_seed(0)
h = torch.randn(L, B, M)
a = torch.randn(n, L, 1, M); b = torch.randn(n, L, 1, M)
dt = 3 / 16
def mem(h, dt, a, b): return h * dt
def trig(h, dt, a, b):
    x = h * dt
    return x.cos() + x.sin()
def poly(h, dt, a, b):   # the Horner work without trig
    c, s = h * dt, h
    ar, ai = a[-1], -b[-1]
    for k in range(len(a) - 2, -1, -1):
        ar, ai = a[k] + ar * c - ai * s, -b[k] + ar * s + ai * c
    return ar * c - ai * s
opts = {"cpp.max_horizontal_fusion_size": 64}
bfns = {"mem": mem, "trig": trig, "poly": poly, "series": EP.series}
cf = {k: torch.compile(f, dynamic=False, options=opts) for k, f in bfns.items()}
for k in cf: cf[k](h, dt, a, b)
def t(f, *args, r=20):
    t0 = time.perf_counter()
    for _ in range(r): f(*args)
    return 1000 * (time.perf_counter() - t0) / r
for rnd in range(3):
    print(rnd, {k: round(t(cf[k], h, dt, a, b), 2) for k in bfns}, "eager trig", round(t(trig, h, dt, a, b), 2), flush=True)
