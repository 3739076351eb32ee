"""The CPU model's planning cost for 50 episodes x 300 candidates (random weights), all at once against groups of
10, 5 and 2 episodes, taking turns (order reversed every other round), 6 rounds; the costs must be equal.
Eager unless an argument is given (then the rollout compiled). From the repository root:
OMP_NUM_THREADS=1 python assets/runs/cpu-amd/plan_groups.py"""
import os, sys, time, torch
sys.path.insert(0, os.getcwd())
import subjepa as sj
cfg = sj.Config(**{**sj.PRESETS["twoRoom"], **sj.SMALL, "img": 64, "patch": 8, "action_dim": 2})
torch.manual_seed(0)
model = sj.JEPA(cfg).eval()
for p in model.parameters(): p.data.add_(0.1 * torch.randn_like(p))
E, S = 50, 300
z0 = torch.randn(E, 1, 96); zg = torch.randn(E, 1, 96)
plans = torch.randn(E, S, 5, 10)
roll = model.rollout
if len(sys.argv) > 1:
    roll = torch.compile(model.rollout)
def run(per):
    return torch.cat([((roll(z0[i:i + per].repeat_interleave(S, 0), plans[i:i + per].flatten(0, 1))[:, -1]).view(-1, S, 96) - zg[i:i + per]).pow(2).sum(-1)
                      for i in range(0, E, per)])
pers = [50, 10, 5, 2]
with torch.no_grad():
    for per in pers: run(per)
    ref = run(50)
    for per in pers: print(per, torch.equal(run(per), ref), (run(per) - ref).abs().max().item())
    tot = {p: [] for p in pers}
    for rnd in range(6):
        order = pers[:] if rnd % 2 == 0 else pers[::-1]
        for per in order:
            t0 = time.perf_counter(); run(per); tot[per].append(time.perf_counter() - t0)
    print({p: f"med {sorted(v)[len(v)//2]*1000:.0f} min {min(v)*1000:.0f}" for p, v in tot.items()}, flush=True)
