"""
Train a JEPA world model on one environment's dataset (collected first if missing).

    python train.py --env twoRoom --subspaces 16          # Sub-JEPA with 16 subspaces, on the best device
    python train.py --env twoRoom --subspaces 0           # LeWM's global SIGReg
    python train.py --env twoRoom --small --steps 3000 --batch 32 --lr 1e-3   # the CPU recipe (README)
    python train.py --env twoRoom --resume                # continue an interrupted run
    python train.py --bench                               # print speed figures, write nothing
"""
import argparse
import dataclasses
import math
import os
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

import subjepa as sj

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--env", default="twoRoom", help=f"environment: {', '.join(sj.PRESETS)}")
p.add_argument("--subspaces", type=int, default=None, help="K: 0 = global SIGReg (LeWM); default: the paper's K for --env")
p.add_argument("--small", action="store_true", help="the 1.2M-parameter CPU model (subjepa.SMALL) instead of the paper's 18M")
p.add_argument("--steps", type=int, default=30000, help="optimizer steps")
p.add_argument("--batch", type=int, default=128, help="clips per step (paper: 128)")
p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW; the paper's 5e-5 is for its 10-epoch schedule)")
p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default: 5%% of --steps), then cosine decay")
p.add_argument("--lam", type=float, default=None, help="weight of the regularizer (default 0.09, the paper's)")
p.add_argument("--data", default=None, help="dataset directory in subjepa's format (default: data/<env>-<img>px, collected if missing)")
p.add_argument("--episodes", type=int, default=None, help="episodes to collect if the dataset is missing (default: subjepa.DATA_DEFAULTS)")
p.add_argument("--img", type=int, default=64, help="image size when collecting (paper: 224, then pass --patch 14)")
p.add_argument("--patch", type=int, default=8, help="ViT patch size")
p.add_argument("--out", default=None, help="checkpoint path (default: runs/<env>.pt)")
p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the first available)")
p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the loss (default: on for CUDA)")
p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA)")
p.add_argument("--seed", type=int, default=0, help="seed of the model, the clip order and the dropout")
p.add_argument("--log-every", type=int, default=250, help="steps between log lines, validation and checkpoints")
p.add_argument("--bench", action="store_true", help="time training steps (fast path against eager fp32) and exit")
args = sj.parse_args(p)

# -----------------------------------------------------------------------------
# setup
device, use_compile, use_bf16 = args.device, args.compile, args.bf16
ctx = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
torch.manual_seed(args.seed)
gen = torch.Generator(device=device).manual_seed(args.seed)   # clip order
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
out = args.out or f"runs/{args.env}.pt"


def make_config(img, action_dim):
    cfg = sj.Config(**{**sj.PRESETS[args.env], **(sj.SMALL if args.small else {}), "img": img, "patch": args.patch,
                       "action_dim": action_dim})
    if args.subspaces is not None:
        cfg.subspaces = args.subspaces
    if args.lam is not None:
        cfg.lam = args.lam
    return cfg


def train_step(model, opt, loss_fn, frames, actions):
    with ctx:
        total, pred, reg = loss_fn(frames, actions)
    opt.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return total, pred, reg


if args.bench:   # synthetic frames resident on the device; the paper's model unless --small
    cfg = make_config(args.img, sj.PRESETS[args.env]["action_dim"])
    fake = sj.Dataset(frames=torch.randint(0, 256, (4096, cfg.img, cfg.img, 3), dtype=torch.uint8).numpy(),
                      actions=torch.randn(4096, cfg.action_dim).numpy(), states=None,
                      episodes=torch.arange(0, 4097, 64).numpy(),
                      meta=dict(action_mean=[0.0] * cfg.action_dim, action_std=[1.0] * cfg.action_dim))
    clips = sj.Clips(fake, range(64), device=device)
    flops = sj.train_flops(cfg, args.batch)
    print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else device}, batch {args.batch} "
          f"clips of 4 frames at {cfg.img}px/patch {cfg.patch}, K={cfg.subspaces}: {flops / 1e12:.3f} TFLOP per step "
          "(matmuls, forward + backward = 3x forward); eager fp32 uses TF32 matmuls on CUDA")
    timings = {}
    fast_name = " + ".join(["compile"] * use_compile + ["bf16"] * use_bf16) or "eager again"
    for name, fast in (("eager fp32", False), (fast_name, True)):
        torch.manual_seed(args.seed)
        model = sj.JEPA(cfg).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
        loss_fn = torch.compile(model.loss) if fast and use_compile else model.loss
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if fast and use_bf16 else nullcontext()
        n = 3 if device.type == "cpu" else 30
        for i in range(2 * n):   # the first n are warm-up (and compilation)
            if i == n:
                sj.synchronize(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                t0 = time.perf_counter()
            losses = train_step(model, opt, loss_fn, *clips.sample(args.batch))
            if i == 0:   # same weights and batch in both runs: pred should agree to bf16 precision (reg
                #          draws fresh directions, which compiled code takes from its own generator)
                print(f"{name:16s} first step: loss {losses[0].item():.4f} pred {losses[1].item():.5f} reg {losses[2].item():.4f}")
        sj.synchronize(device)
        ms = 1000 * (time.perf_counter() - t0) / n
        mem = f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else ""
        print(f"{name:16s} {ms:8.1f} ms/step {1000 * args.batch / ms:8.0f} clips/s "
              f"{flops / ms / 1e9:.3g} TFLOP/s{mem}")
        timings[name] = ms
    print(f"speed-up {timings['eager fp32'] / ms:.2f}x")
    raise SystemExit

# -----------------------------------------------------------------------------
# data
data = args.data or f"data/{args.env}-{args.img}px"
if args.data is None and not os.path.exists(data):
    print(f"collecting the {args.env} dataset into {data}")
    sj.collect(args.env, data, episodes=args.episodes, img=args.img)   # data seed 0, whatever --seed
ds = sj.load_dataset(data)
if ds.meta["env"] != args.env:
    raise sj.InputError(f"{data} holds {ds.meta['env']} data, not {args.env}: pass the matching --env or --data")
train_eps, val_eps = sj.split_episodes(len(ds.episodes) - 1)
train = sj.Clips(ds, train_eps, device=device)
val = sj.Clips(ds, val_eps, device=device)
print(f"{data}: {len(ds.frames)} frames, {len(train)} training clips, {len(val)} held-out clips "
      f"({len(val_eps)} held-out episodes)")

# -----------------------------------------------------------------------------
# model, optimizer, resume
ckpt = sj.load_checkpoint(out) if args.resume else None
if ckpt:
    cfg = sj.Config(**ckpt["config"])
else:
    cfg = make_config(ds.meta["img"], ds.actions.shape[1])
model = sj.JEPA(cfg).to(device)
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3)
step = 0
if ckpt:
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    step = ckpt["step"]
    gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["rng"])
    print(f"resumed {out} at step {step}")
print(f"{'Sub-JEPA, K=%d' % cfg.subspaces if cfg.subspaces else 'LeWM, global SIGReg'}; "
      + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in model.param_counts().items())
      + f"; {device}, compile {use_compile}, bf16 {use_bf16}")
if device.type == "cpu" and not args.small and cfg.dim == sj.Config.dim:
    print("note: the paper's model takes ~3 s a step on a 2-core CPU; --small is the CPU recipe (README)")
loss_fn = torch.compile(model.loss) if use_compile else model.loss
warmup = args.warmup if args.warmup is not None else args.steps // 20


def lr_at(s):   # linear warm-up, then cosine decay to zero
    if s < warmup:
        return args.lr * (s + 1) / warmup
    return args.lr * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, args.steps - warmup)))


@torch.no_grad()
def validate(batches=8):
    """Recalibrate BatchNorm on training clips, then the losses on held-out clips, the same ones every time."""
    g = torch.Generator(device=device).manual_seed(1234)
    with ctx:
        model.calibrate(train.sample(args.batch, g) for _ in range(20))
        losses = torch.tensor([[x.item() for x in model.loss(*val.sample(args.batch, g))] for _ in range(batches)])
    model.train()
    return losses.mean(0)


def save():
    sj.save_checkpoint(out, model=model.state_dict(), optimizer=opt.state_dict(), config=dataclasses.asdict(cfg),
                       step=step, env=args.env, data=os.path.abspath(data), generator=gen.get_state(),
                       rng=torch.get_rng_state(), action_mean=ds.meta["action_mean"], action_std=ds.meta["action_std"])

# -----------------------------------------------------------------------------
# training loop
model.train()
bar = tqdm(total=args.steps, initial=step, desc="train", dynamic_ncols=True)
t0, done0 = time.perf_counter(), step
while step < args.steps:
    for group in opt.param_groups:
        group["lr"] = lr_at(step)
    total, pred, reg = train_step(model, opt, loss_fn, *train.sample(args.batch, gen))
    step += 1
    bar.update()
    if step % args.log_every == 0 or step == args.steps:
        sj.synchronize(device)
        ms = 1000 * (time.perf_counter() - t0) / (step - done0)
        v_total, v_pred, v_reg = validate()
        line = (f"step {step} | loss {total.item():.4f} pred {pred.item():.4f} reg {reg.item():.3f} | "
                f"val pred {v_pred:.4f} reg {v_reg:.3f} | lr {lr_at(step - 1):.2e} | {ms:.0f} ms/step "
                f"{1000 * args.batch / ms:.0f} clips/s")
        bar.set_postfix_str(f"pred {pred.item():.4f} reg {reg.item():.3f}")
        tqdm.write(line)
        save()
        t0, done0 = time.perf_counter(), step
bar.close()
print(f"saved {out}")
