# experiment: pushT with the T's stem drawn in another colour than its bar (green under orange), so that the
# block's angle is the direction from one coloured patch to the other (positions, which the encoder reads at
# R^2 0.95) rather than a shape a few pixels wide; everything else as subjepa's PushT. Runs a script with the patch:
#   PYTHONPATH=. python assets/runs/tries/pushT_twotone.py rerender data/pushT-64px data/pushT-twotone-64px
#     (the same states and actions, frames drawn again)
#   PYTHONPATH=. python assets/runs/tries/pushT_twotone.py train.py --env pushT --recipe cpu --data data/pushT-twotone-64px ...
#   PYTHONPATH=. python assets/runs/tries/pushT_twotone.py plan.py --env pushT --ckpt ... --seed 1 --probe --prediction
import json, math, os, runpy, shutil, sys
import numpy as np
import subjepa as sj

STEM = sj.rgb(60, 150, 80)

def render(self):
    out, q = self.bg.copy(), self.data.qpos
    c, s = math.cos(q[4]), math.sin(q[4])
    (bx, by, bhx, bhy), (sx, sy, shx, shy) = sj.T_BOXES
    # the stem first, drawn 15 units into the bar, then the bar over it: no anti-aliasing seam
    sy, shy = sy - 7.5, shy + 7.5
    self.canvas.box(out, q[2] + c * sx - s * sy, q[3] + s * sx + c * sy, shx, shy, q[4], STEM)
    self.canvas.box(out, q[2] + c * bx - s * by, q[3] + s * bx + c * by, bhx, bhy, q[4], sj.rgb(235, 120, 50))
    self.canvas.circle(out, q[0], q[1], self.R, sj.rgb(50, 90, 220))
    return out

sj.PushT.render = render
sys.argv = sys.argv[1:]
if sys.argv[0] == "rerender":
    src, dst = sys.argv[1:3]
    assert not os.path.exists(dst), dst
    tmp = dst + ".tmp"
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("frames.npy"))
    states = np.load(os.path.join(src, "states.npy"))
    env = sj.make_env("pushT", json.load(open(os.path.join(src, "meta.json")))["img"])
    frames = np.lib.format.open_memmap(os.path.join(tmp, "frames.npy"), "w+", np.uint8, (len(states), env.img, env.img, 3))
    for i, st in enumerate(states):
        env.set_state(st)
        frames[i] = env.render()
        if i % 20000 == 0:
            print(i, len(states), flush=True)
    frames.flush(); del frames
    os.rename(tmp, dst)
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
