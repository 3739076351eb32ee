import os
import sys, time, torch
sys.path.insert(0, os.getcwd())
import subjepa as sj
from torch.profiler import profile, ProfilerActivity
cfg = sj.Config(**{**sj.PRESETS["twoRoom"], **sj.SMALL, "img": 64, "patch": 8, "action_dim": 2})
cfg.subspaces = int(sys.argv[1])
torch.manual_seed(0)
model = sj.JEPA(cfg)
loss_fn = model.compiled_loss(model, whole=False)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
B = 32
frames = torch.randint(0, 256, (B, 4, 3, 64, 64), dtype=torch.uint8)
actions = torch.randn(B, 4, cfg.action_dim * cfg.frameskip if hasattr(cfg, "frameskip") else 10)
def step():
    losses = loss_fn(frames, actions)
    opt.zero_grad(set_to_none=True)
    losses[0].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
for _ in range(5): step()
t0 = time.perf_counter()
for _ in range(5): step()
print("ms/step", (time.perf_counter() - t0) / 5 * 1000)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(5): step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
