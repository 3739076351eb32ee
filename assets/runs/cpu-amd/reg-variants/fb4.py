import os, sys, time
import torch
sys.path.insert(0, os.getcwd())
import subjepa as sj
EP = sj.EppsPulley
L, B, M, n = 128, 32, 512, 16
torch.manual_seed(0)
h = torch.randn(L, B, M)
a = torch.randn(n, L, 1, M); b = torch.randn(n, L, 1, M)
# row-by-row layout as the real backward: (L, n, M) viewed (n, L, 1, M)
a_rows = a[:, :, 0].transpose(0, 1).contiguous().transpose(0, 1)[:, :, None]
b_rows = b[:, :, 0].transpose(0, 1).contiguous().transpose(0, 1)[:, :, None]
hT = h.transpose(1, 2).contiguous()             # (L, M, B)
aT = a[:, :, 0, :, None].contiguous(); bT = b[:, :, 0, :, None].contiguous()   # (n, L, M, 1)
aT2 = a[:, :, 0].permute(1, 2, 0).contiguous().permute(2, 0, 1)[..., None]     # (n, L, M, 1) with n fastest
bT2 = b[:, :, 0].permute(1, 2, 0).contiguous().permute(2, 0, 1)[..., None]
dt = 3 / 16
opts = {"cpp.max_horizontal_fusion_size": 64}
f = torch.compile(EP.series, dynamic=False, options=opts)
ref = f(h, dt, a_rows, b_rows)
print("T err", (f(hT, dt, aT, bT).transpose(1, 2) - ref).abs().max().item(), (f(hT, dt, aT2, bT2).transpose(1, 2) - ref).abs().max().item())
def t(*args, r=20):
    t0 = time.perf_counter()
    for _ in range(r): f(*args)
    return 1000 * (time.perf_counter() - t0) / r
def tt(r=20):
    t0 = time.perf_counter()
    for _ in range(r): f(h.transpose(1, 2).contiguous(), dt, aT2, bT2).transpose(1, 2).contiguous()
    return 1000 * (time.perf_counter() - t0) / r
for rnd in range(4):
    print(rnd, "rows", round(t(h, dt, a_rows, b_rows), 2), "contig", round(t(h, dt, a, b), 2), "T", round(t(hT, dt, aT, bT), 2),
          "T n-fastest", round(t(hT, dt, aT2, bT2), 2), "T+copies", round(tt(), 2), flush=True)
