import os
import sys, time, torch
sys.path.insert(0, os.getcwd())
import subjepa as sj
from torch.profiler import profile, ProfilerActivity
cfg = sj.Config(**{**sj.PRESETS["twoRoom"], **sj.SMALL, "img": 64, "patch": 8, "action_dim": 2})
torch.manual_seed(0)
model = sj.JEPA(cfg).eval()
for p in model.parameters(): p.data.add_(0.1 * torch.randn_like(p))
E, S = 50, 300
z0 = torch.randn(E, 1, 96); zg = torch.randn(E, 1, 96)
plans = torch.randn(E, S, 5, 10)
with torch.no_grad():
    model.cost(z0, zg, plans)
    t0 = time.perf_counter(); model.cost(z0, zg, plans); print("s", time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.cost(z0, zg, plans)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
