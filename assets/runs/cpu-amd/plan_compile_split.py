# AVX2: a CEM solve of the CPU model, eager (keys and values cached) against the rollout compiled in fp32; interleaved.
# OMP_NUM_THREADS=N python assets/runs/cpu-amd/plan_compile_split.py EPISODES ITERS (plan_compile_split-*.log)
import time, sys, torch
sys.path.insert(0, ".")   # run from the repository root
import subjepa as sj
E, iters = int(sys.argv[1]), int(sys.argv[2])
cfg = sj.Config(**{**sj.PRESETS["twoRoom"], **sj.SMALL, "img": 64, "patch": 8})
paths = {}
for name in ("eager", "compiled"):
    torch.manual_seed(0)
    m = sj.JEPA(cfg).eval()
    with torch.no_grad():
        for w in m.parameters():
            w.add_(0.1 * torch.randn_like(w))
    if name == "compiled":
        m.rollout = torch.compile(m.rollout)
    paths[name] = m
frames = torch.randint(0, 256, (2, E, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
ms = {k: [] for k in paths}
for i in range(4):
    for name, m in paths.items():
        t0 = time.perf_counter()
        plan = m.plan(*frames, 5, torch.Generator().manual_seed(0), iters=iters)
        ms[name].append(time.perf_counter() - t0)
        if i == 0: print(name, f"first solve {ms[name][0]:.1f} s", flush=True)
for k, v in ms.items():
    print(f"{k:9s} {E} episodes x {iters} iters: min {min(v[1:]):.2f} s, all {[round(x, 2) for x in v[1:]]}")
print(f"compiled / eager speed-up {min(ms['eager'][1:]) / min(ms['compiled'][1:]):.3f}x")
