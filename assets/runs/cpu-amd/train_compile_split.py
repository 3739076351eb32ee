# AVX2: a CPU-recipe training step eager, with the regularizer's kernels compiled alone, and compiled whole; interleaved, one process.
# OMP_NUM_THREADS=N python assets/runs/cpu-amd/train_compile_split.py K STEPS (train_compile_split-*.log)
import time, dataclasses, sys, torch
sys.path.insert(0, ".")   # run from the repository root
import subjepa as sj
K = int(sys.argv[1]) if len(sys.argv) > 1 else 32
B = 32
cfg = sj.Config(**{**sj.PRESETS["twoRoom"], **sj.SMALL, "img": 64, "patch": 8, "action_dim": 2})
cfg.subspaces = K
def mk(mode, k):
    torch.manual_seed(0)
    m = sj.JEPA(dataclasses.replace(cfg, subspaces=k)).train()
    fn = m.compiled_loss(whole=mode == "whole") if mode else m.loss
    return dict(m=m, fn=fn, opt=torch.optim.AdamW(m.parameters(), 1e-4), t=0.0)
paths = {"eager": mk(None, K), "reg compiled": mk("reg", K), "whole": mk("whole", K)}
g = torch.Generator().manual_seed(0)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
for i in range(2 * n):
    frames = torch.randint(0, 256, (B, 4, 3, 64, 64), dtype=torch.uint8, generator=g)
    acts = torch.randn(B, 3, cfg.frameskip * 2, generator=g)
    for name, p in paths.items():
        p["m"].reg.seed = i
        t0 = time.perf_counter()
        losses = p["fn"](frames, acts)
        p["opt"].zero_grad(); losses[0].backward(); p["opt"].step()
        if i >= n: p["t"] += time.perf_counter() - t0
        if i == 0: print(name, f"{time.perf_counter() - t0:.1f} s", [round(x.item(), 5) for x in losses], flush=True)
for name, p in paths.items():
    print(f"{name:14s} {1000 * p['t'] / n:7.1f} ms/step")
e, f, z = (paths[k]["t"] for k in paths)
print(f"speed-up over eager: reg compiled {e / f:.3f}x, whole {e / z:.3f}x")
