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

def cmul(x, y):
    return x[0] * y[0] - x[1] * y[1], x[0] * y[1] + x[1] * y[0]

def series_split(h, dt, a, b, m):   # sum_k a_k cos(k x) + b_k sin(k x) = Re(e sum_r e^r Q_r(e^m)), m Horner chains
    x = dt * h
    e = (x.cos(), x.sin())
    pw = [None, e]
    for r in range(2, m + 1):
        pw.append(cmul(pw[-1], e) if r % 2 else cmul(pw[r // 2], pw[r // 2]))
    E = pw[m]
    total = None
    for r in range(m):
        ks = list(range(r, len(a), m))           # d_j = c_{j+1} = a_j - i b_j (0-based j)
        ar, ai = a[ks[-1]], -b[ks[-1]]
        for j in reversed(ks[:-1]):
            ar, ai = a[j] + ar * E[0] - ai * E[1], -b[j] + ar * E[1] + ai * E[0]
        term = (ar, ai) if r == 0 else cmul((ar, ai), pw[r])
        total = term if total is None else (total[0] + term[0], total[1] + term[1])
    return total[0] * e[0] - total[1] * e[1]

opts = {"cpp.max_horizontal_fusion_size": 64}
bfns = {"series": EP.series, "split2": lambda h, dt, a, b: series_split(h, dt, a, b, 2),
        "split4": lambda h, dt, a, b: series_split(h, dt, a, b, 4)}
cf = {}
for k, f in bfns.items():
    g = torch.compile(f, dynamic=False, options=opts)
    t0 = time.perf_counter()
    g(h, dt, a, b)
    print(k, "compile+first", round(time.perf_counter() - t0, 1), "s", flush=True)
    cf[k] = g
ref2 = EP.series(h.double(), dt, a.double(), b.double()).float()
for k in bfns: print(k, "maxerr", (cf[k](h, dt, a, b) - ref2).abs().max().item(), "scale", ref2.abs().max().item())
def t(f, *args, r=20):
    t0 = time.perf_counter()
    for _ in range(r): f(*args)
    return 1000 * (time.perf_counter() - t0) / r
for rnd in range(4):
    print(rnd, {k: round(t(cf[k], h, dt, a, b), 2) for k in bfns}, flush=True)
