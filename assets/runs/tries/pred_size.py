# experiment: a larger predictor for the CPU model (subjepa.SMALL: 3 layers, 4 heads of 32, MLP 384). The
# predictor works on one token a frame, so its size costs little per training step (the encoder's 65 tokens
# a frame dominate) and in proportion per CEM solve (planning is all predictor). The size is saved in the
# checkpoint's config, so plan.py needs no patch:
#   PRED=layers,heads,head_dim,mlp PYTHONPATH=. python assets/runs/tries/pred_size.py train.py --env pushT --recipe cpu --out ...
import os, runpy, sys
import subjepa as sj
layers, heads, head_dim, mlp = map(int, os.environ["PRED"].split(","))
sj.SMALL.update(pred_layers=layers, pred_heads=heads, pred_head_dim=head_dim, pred_mlp=mlp)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
