# The "--pos-std 1" rows were run before that flag existed, with this patch (positions drawn untruncated):
#   EXP=pos1.0 python assets/runs/tries/train_exp.py --env cube --recipe cpu --steps 1000 --out runs/e6-cube-pos1.pt
# (today: python train.py --env cube --recipe cpu --steps 1000 --pos-std 1, truncated at +-2). Every other row:
#   python train.py --env ENV --recipe cpu --steps 1000 [the row's flags] --out runs/NAME.pt
#   python plan.py --env ENV --ckpt runs/NAME.pt --probe --prediction --no-plan --json runs/NAME.json
import os, runpy, sys, torch, torch.nn as nn
sys.path.insert(0, os.getcwd())
import subjepa as sj
exp = os.environ.get("EXP", "")
if "pos" in exp:   # encoder positions drawn at a larger scale (the patch embeddings are ~unit scale)
    std = float(exp.split("pos")[1].split(",")[0])
    init = sj.JEPA._init_weights
    def _init(m):
        init(m)
        if isinstance(m, sj.Encoder):
            nn.init.normal_(m.pos, std=std)
    sj.JEPA._init_weights = staticmethod(_init)
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
