import os
import time, torch, torch.nn.functional as F
torch.manual_seed(0)
def mk(B, H, T, d):
    return [torch.randn(B, H, T, d, requires_grad=True) for _ in range(3)]
def sdpa(q, k, v, causal=False): return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
def math_(q, k, v, causal=False): return F.scaled_dot_product_attention(q, k, v, is_causal=causal) 
def wo(q, k, v, causal=False):
    s = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    return s.softmax(-1) @ v
def t(f, qkv, r=10, bwd=True):
    for _ in range(2):
        y = f(*qkv); (y.sum().backward() if bwd else None)
    t0 = time.perf_counter()
    for _ in range(r):
        y = f(*qkv)
        if bwd: y.backward(torch.ones_like(y))
    return 1000 * (time.perf_counter() - t0) / r
for shape in [(128, 3, 65, 32), (512, 3, 257, 64)[:0] or (128, 3, 65, 32)]:
    qkv = mk(*shape)
    for rnd in range(3):
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            m = t(sdpa, qkv)
        print(shape, rnd, "flash fwd+bwd", round(t(sdpa, qkv), 2), "written out", round(t(wo, qkv), 2), "math", round(m, 2),
              "| fwd only: flash", round(t(sdpa, qkv, bwd=False), 2), "wo", round(t(wo, qkv, bwd=False), 2), flush=True)
