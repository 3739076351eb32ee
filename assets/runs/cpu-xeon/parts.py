# What each part of the CPU planning fast path gives: one CEM solve (1 episode, 300 samples x ITERS iterations
# x 5 blocks) of the paper-size model at 1 thread, the paths taking turns in one process (same weights, frames,
# noise): fp32 or bf16 (autocast; attention written out, or PyTorch's math kernel as the previous release
# did), the rollout's keys and values cached or recomputed.
#   OMP_NUM_THREADS=1 PYTHONPATH=. python assets/runs/cpu-xeon/parts.py [ITERS]
import functools, sys, time
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import subjepa as sj

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 6
torch.manual_seed(0)
model = sj.JEPA(sj.Config(**sj.PRESETS["twoRoom"])).eval()
frames = torch.randint(0, 256, (2, 1, 3, 64, 64), dtype=torch.uint8)
cpu = torch.device("cpu")
paths = {"fp32, recomputed (the official code's work)": (lambda: sj.precision(cpu, False), False),
         "fp32, cached": (lambda: sj.precision(cpu, False), True),
         "bf16, math kernel, recomputed (previous release)": ("math", False),
         "bf16, written out, recomputed": (lambda: sj.precision(cpu, True), False),
         "bf16, written out, cached (this release)": (lambda: sj.precision(cpu, True), True)}
ms = {k: [] for k in paths}
for i in range(4):
    for name, (ctx, cached) in paths.items():
        model.rollout = functools.partial(sj.JEPA.rollout, model, cached=cached)
        t0 = time.perf_counter()
        if ctx == "math":
            with torch.autocast("cpu", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.MATH):
                model.plan(*frames, 5, torch.Generator().manual_seed(0), iters=iters)
        else:
            with ctx():
                model.plan(*frames, 5, torch.Generator().manual_seed(0), iters=iters)
        ms[name].append(1000 * (time.perf_counter() - t0))
base = min(ms[next(iter(paths))][1:])
for name in paths:
    print(f"{name:50s} {min(ms[name][1:]):8.1f} ms per solve of {iters} iterations  {base / min(ms[name][1:]):.2f}x")
