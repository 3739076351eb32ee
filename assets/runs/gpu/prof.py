# Where the paper-size fast path spends a training step and a CEM solve (not part of the project).
import sys, time, torch
import subjepa as sj
from torch.profiler import profile, ProfilerActivity
dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
small = dev.type == "cpu"
torch.backends.cuda.matmul.allow_tf32 = True
cfg = sj.Config(**{**sj.PRESETS["twoRoom"], **(sj.SMALL if small else {})})
B = 8 if small else 128
frames = torch.randint(0, 256, (4096, 64, 64, 3), dtype=torch.uint8).numpy()
ds = sj.Dataset(frames=frames, actions=torch.randn(4096, 2).numpy(), states=None,
                episodes=torch.arange(0, 4097, 64).numpy(), meta=dict(action_mean=[0.0] * 2, action_std=[1.0] * 2))
clips = sj.Clips(ds, range(64), device=dev)
torch.manual_seed(0)
model = sj.JEPA(cfg).to(dev).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
loss_fn = model.compiled_loss(model)
gen = torch.Generator(device=dev).manual_seed(0)
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
def step(i, t=None):
    def mark(k):
        if t is not None:
            sj.synchronize(dev); t[k] = t.get(k, 0) + time.perf_counter()
    mark("0"); f, a = clips.sample(B, gen, 0, 1); mark("sample")
    model.reg.seed = i
    with sj.precision(dev, True):
        losses = loss_fn(f, a)
    mark("forward"); opt.zero_grad(set_to_none=True); losses[0].backward(); mark("backward")
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); mark("clip"); opt.step(); mark("adamw")
for i in range(15): step(i)
n = 10; t = {}
for i in range(n): step(i, t)
keys = list(t); print("train step phases, ms:", {k: round(1000 * (t[k] - t[keys[j - 1]]) / n, 2) for j, k in enumerate(keys) if j})
sj.synchronize(dev); t0 = time.perf_counter()
for i in range(n): step(i)
sj.synchronize(dev); print(f"train step, no syncs: {1000 * (time.perf_counter() - t0) / n:.1f} ms")
with profile(activities=acts) as prof:
    for i in range(3): step(i)
    sj.synchronize(dev)
sk = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
print(prof.key_averages().table(sort_by=sk, row_limit=25, max_name_column_width=70))
# CEM: one episode, the fast path as plan.py --bench runs it
model.eval()
model.rollout = torch.compile(model.rollout, mode="reduce-overhead" if dev.type == "cuda" else None)
for E in (1, 50):
    fr = torch.randint(0, 256, (2, E, 3, 64, 64), dtype=torch.uint8, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    kw = dict(samples=300, elites=30, iters=3 if small else 30)
    for i in range(3):
        with torch.no_grad(), sj.precision(dev, True):
            model.plan(*fr, 5, g, **kw)
    sj.synchronize(dev); t0 = time.perf_counter()
    with torch.no_grad(), sj.precision(dev, True):
        model.plan(*fr, 5, g, **kw)
    sj.synchronize(dev); print(f"CEM solve, {E} episodes: {1000 * (time.perf_counter() - t0):.1f} ms")
    with profile(activities=acts) as prof:
        with torch.no_grad(), sj.precision(dev, True):
            model.plan(*fr, 5, g, **kw)
        sj.synchronize(dev)
    print(prof.key_averages().table(sort_by=sk, row_limit=18, max_name_column_width=70))
