# pushT: probes of the encoder's output before the projector (the recipe trained again, runs/pushT-6k-2t.pt); log in pushT_preproj.log
#   OMP_NUM_THREADS=1 PYTHONPATH=. python assets/runs/tries/pushT_preproj.py
import torch, numpy as np, subjepa as sj
ds = sj.load_dataset("data/pushT-64px")
m, ck = sj.load_model("runs/pushT-6k-2t.pt", env="pushT")
proj = m.projector
m.projector = torch.nn.Identity()
lin, nn, _ = sj.probe(m, ds)
print("before the projector", {k: round(v, 2) for k, v in lin.items()}, "nn", {k: round(v, 2) for k, v in nn.items()})
