import os
import time, torch, torch.nn.functional as F
torch.manual_seed(0)
def flash(q, k, v, causal): return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
def bmm(q, k, v, causal):
    T = q.shape[2]
    s = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if causal: s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v
def few(q, k, v, causal):
    T = q.shape[2]
    s = ((q * q.shape[-1] ** -0.5)[..., None, :] * k[..., None, :, :]).sum(-1)
    if causal: s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return (s.softmax(-1)[..., None] * v[..., None, :, :]).sum(-2)
def t(f, *a, r=20):
    f(*a)
    t0 = time.perf_counter()
    for _ in range(r): f(*a)
    return 1000 * (time.perf_counter() - t0) / r
with torch.no_grad():
    for tq, tk in ((1, 1), (1, 2), (1, 3), (2, 2), (3, 3)):
        q = torch.randn(1500, 3, 4, 32).transpose(1, 2)[:, :, :tq]   # non-contiguous, as from qkv permute
        k = torch.randn(1500, 3, 4, 32).transpose(1, 2)[:, :, :tk]; v = torch.randn(1500, 3, 4, 32).transpose(1, 2)[:, :, :tk]
        causal = tq > 1
        ref = flash(q, k, v, causal)
        print(tq, tk, "err bmm", (bmm(q, k, v, causal) - ref).abs().max().item(), "few", (few(q, k, v, causal) - ref).abs().max().item())
        for rnd in range(2):
            print("   ", {n: round(t(f, q, k, v, causal), 3) for n, f in (("flash", flash), ("bmm", bmm), ("few", few))}, flush=True)
