# python assets/runs/tries/tip_probe.py runs/r4k.pt  (PYTHONPATH=.; the checkpoint of e13-reacher-pos1-4000.log); output in e13-tip-probe.txt
# probe: the reacher's fingertip and elbow positions from frozen embeddings (ridge, as plan.py --probe)
import sys, numpy as np, torch, subjepa as sj
torch.set_num_threads(1)
model = sj.load_model(sys.argv[1])[0]; ds = sj.load_dataset('data/reacher-64px')
L = 0.12
def obs(S):
    q1, q2 = S[:, 0], S[:, 1]
    x1, y1 = L*np.cos(q1), L*np.sin(q1); x2, y2 = x1 + L*np.cos(q1+q2), y1 + L*np.sin(q1+q2)
    return ["elbow x", "elbow y", "tip x", "tip y", "tip dist", "tip angle sin", "tip angle cos"], np.column_stack(
        [x1, y1, x2, y2, np.hypot(x2, y2), y2/np.hypot(x2, y2), x2/np.hypot(x2, y2)])
sj.Reacher.observables = lambda self, S: obs(S)
r = sj.probe(model, ds)
print(r)
