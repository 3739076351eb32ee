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

def cheb_powers(h, dt, n):
    x = dt * h
    c, s = x.cos(), x.sin()
    two_c = c + c
    cs, ss = [c], [s]
    cp, sp = torch.ones_like(c), torch.zeros_like(s)
    ck, sk = c, s
    for k in range(2, n + 1):
        ck, sk, cp, sp = two_c * ck - cp, two_c * sk - sp, ck, sk
        cs.append(ck); ss.append(sk)
    return torch.stack([torch.stack([v.mean(1) for v in cs]), torch.stack([v.mean(1) for v in ss])])

def clenshaw(h, dt, a, b):
    x = dt * h
    c, s = x.cos(), x.sin()
    two_c = c + c
    y1, y2 = a[-1] + 0 * c, 0 * c
    z1, z2 = b[-1] + 0 * c, 0 * c
    for k in range(len(a) - 2, -1, -1):
        y1, y2 = a[k] + two_c * y1 - y2, y1
        z1, z2 = b[k] + two_c * z1 - z2, z1
    return y1 * c - y2 + z1 * s

opts = {"cpp.max_horizontal_fusion_size": 64}
def comp(f):
    t0 = time.perf_counter()
    g = torch.compile(f, dynamic=False, options=opts)
    return g
fns = {"powers": EP.powers, "cheb": cheb_powers}
bfns = {"series": EP.series, "clenshaw": clenshaw}
cf = {}
for k, f in {**fns, **bfns}.items():
    g = comp(f)
    t0 = time.perf_counter()
    out = g(h, dt, n) if k in fns else g(h, dt, a, b)
    print(k, "compile+first", round(time.perf_counter() - t0, 1), "s", flush=True)
    cf[k] = g
ref = EP.powers(h.double(), dt, n).float(); ref2 = EP.series(h.double(), dt, a.double(), b.double()).float()
for k in fns: print(k, "maxerr", (cf[k](h, dt, n) - ref).abs().max().item())
for k in bfns: print(k, "maxerr", (cf[k](h, dt, a, b) - ref2).abs().max().item(), "scale", ref2.abs().max().item())
def t(f, *args, r=20):
    t0 = time.perf_counter()
    for _ in range(r): f(*args)
    return 1000 * (time.perf_counter() - t0) / r
for rnd in range(3):
    print(rnd, {k: round(t(cf[k], h, dt, n), 2) for k in fns}, {k: round(t(cf[k], h, dt, a, b), 2) for k in bfns}, flush=True)
