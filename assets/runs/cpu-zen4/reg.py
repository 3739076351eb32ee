"""The subspace statistic alone at the CPU recipe's shape: forward + backward of SubspaceSIGReg on z (T=4, B=32,
D=96), K=32, M=512, eager (fused=None) and with the compiled kernels (fused="inductor"), and the global SIGReg
beside it. Run from the repository root: OMP_NUM_THREADS=1 python assets/runs/cpu-zen4/reg.py"""
import os, sys, time
import torch
sys.path.insert(0, os.getcwd())
import subjepa as sj

T, B, D, K, M = 4, 32, 96, 32, 512


def ms(reg, z, n=20):
    for _ in range(3):
        z.grad = None
        reg(z).backward()
    t0 = time.perf_counter()
    for _ in range(n):
        z.grad = None
        reg(z).backward()
    return 1000 * (time.perf_counter() - t0) / n


torch.manual_seed(0)
z = torch.randn(T, B, D, requires_grad=True)
for rnd in range(2):
    for fused in (None, "inductor"):
        g, s = sj.SIGReg(M), sj.SubspaceSIGReg(D, K, M)
        g.fused = s.fused = fused
        print(f"round {rnd} fused={fused}: global {ms(g, z):.1f} ms, K={K} {ms(s, z):.1f} ms", flush=True)
