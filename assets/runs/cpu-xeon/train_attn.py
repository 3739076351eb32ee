# One training step under bf16 at 1 thread: attention by PyTorch's math kernel (the previous releases' fast path)
# against written out (this release's), the two taking turns in one process, same weights and batch.
#   OMP_NUM_THREADS=1 PYTHONPATH=. python assets/runs/cpu-xeon/train_attn.py small|paper 0|1 (compiled) [STEPS]
import sys, time, torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import subjepa as sj
torch.set_num_threads(1)
small = sys.argv[1] == "small"; compiled = sys.argv[2] == "1"
cfg = sj.Config(**sj.PRESETS["twoRoom"], **(sj.SMALL if small else {}))
B = 32 if small else 128
frames = torch.randint(0, 256, (B, 4, 3, 64, 64), dtype=torch.uint8); actions = torch.randn(B, 3, 10)
paths = {}
for name in ("math", "written"):
    torch.manual_seed(0)
    m = sj.JEPA(cfg).train()
    paths[name] = [m, torch.optim.AdamW(m.parameters(), 1e-4), m.compiled_loss() if compiled else m, 0.0]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 8
for i in range(2 * n):
    for name, p in paths.items():
        m, opt, f = p[:3]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if name == "math":
                with sdpa_kernel(SDPBackend.MATH):
                    loss = f(frames, actions)[0]
            else:
                sj.Attention.written_out = True
                loss = f(frames, actions)[0]
                sj.Attention.written_out = False
        loss.backward(); opt.step(); opt.zero_grad()
        if i >= n: p[3] += time.perf_counter() - t0
        if i == 0: print(name, loss.item())
for name, p in paths.items():
    print(f"{name}: {1000 * p[3] / n:.1f} ms/step")
print(f"math / written: {paths['math'][3] / paths['written'][3]:.3f}")
