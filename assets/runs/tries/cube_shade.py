# experiment: the cube world with its gripper drawn lighter the higher it is (as the cube already is), so that
# one patch shows the gripper's height; everything else as subjepa's Cube. Runs a script with the patch applied:
#   PYTHONPATH=. python assets/runs/tries/cube_shade.py collect data/cube-shade-64px
#   PYTHONPATH=. python assets/runs/tries/cube_shade.py train.py --env cube --recipe cpu --data data/cube-shade-64px ...
#   PYTHONPATH=. python assets/runs/tries/cube_shade.py plan.py --env cube --ckpt ... --seed 1 --probe --prediction
# (collection in this process: spawned workers would import the unpatched renderer)
import math, runpy, sys
import subjepa as sj

def render(self):
    out, q, cv = self.bg.copy(), self.data.qpos, self.canvas
    gx, gy, gz, gyaw, fl, fr, cx, cy, cz = q[:9]
    cyaw, c, s = sj.quat_yaw(*q[9:13]), math.cos(gyaw), math.sin(gyaw)
    cv.box(out, cx, cy, 0.02, 0.02, cyaw, sj.rgb(0, 0, 0), 0.35)
    cv.box(out, gx, gy, 0.015, 0.05, gyaw, sj.rgb(0, 0, 0), 0.2)
    k, lift = 0.02 * (1 + self.LIFT * cz), min(6 * max(cz - 0.02, 0.0), 1.0)
    cv.box(out, cx, cy + self.SHIFT * cz, k, k, cyaw, sj.rgb(200, 30, 40) + lift * sj.rgb(55, 150, 110))
    k, fz = 1 + self.LIFT * gz, gz - 0.035
    shade = min(max((gz - 0.06) / 0.08, 0.0), 1.0)  # the change: dark at grasping height, light 8 cm above
    cv.box(out, gx, gy + self.SHIFT * gz, 0.015 * k, 0.05 * k, gyaw, sj.rgb(40, 40, 50) + shade * sj.rgb(200, 200, 40), 0.45)
    k = 1 + self.LIFT * fz
    for off in (fl + 0.005, -fr - 0.005):
        x, y = gx - s * off * k, gy + c * off * k + self.SHIFT * fz
        cv.box(out, x, y, 0.008 * k, 0.005 * k, gyaw, sj.rgb(20, 60, 200), 0.9)
    return out

sj.Cube.render = render
sys.argv = sys.argv[1:]
if sys.argv[0] == "collect":
    sj.collect("cube", sys.argv[1], workers=1)   # the dataset's defaults: 2000 episodes of 100 steps, 64 px, seed 0
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
