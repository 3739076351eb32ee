import torch, time, torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
torch.manual_seed(0)
def manual(q, k, v, causal):
    T = q.shape[-2]
    att = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if causal: att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return att.softmax(-1) @ v
for B, h, hd, T in ((1500, 4, 32, 3), (300, 16, 64, 3), (128, 16, 64, 3), (32, 4, 32, 3), (128*4, 3, 64, 65)):
    for dt in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(B, h, T, hd, dtype=dt, requires_grad=True) for _ in range(3))
        res = {}
        for name, fn in (("sdpa", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
                         ("manual", lambda: manual(q, k, v, True))):
            ts = []
            for i in range(7):
                t0 = time.perf_counter(); y = fn(); y.sum().backward(); ts.append(time.perf_counter() - t0)
            ts2 = []
            with torch.no_grad():
                for i in range(7):
                    t0 = time.perf_counter(); y = fn(); ts2.append(time.perf_counter() - t0)
            res[name] = (1000 * min(ts[2:]), 1000 * min(ts2[2:]))
        print(B, h, hd, T, dt, {k: f"fwd+bwd {a:.2f} ms, fwd {b:.2f} ms" for k, (a, b) in res.items()})
