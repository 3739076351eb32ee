"""
Train a JEPA world model on one environment's dataset (collected first if missing).

    python train.py --env twoRoom --subspaces 16          # Sub-JEPA, 16 subspaces; the recipe fits the hardware
    python train.py --env twoRoom --subspaces 0           # LeWM's global SIGReg
    python train.py --env twoRoom --recipe cpu            # the CPU recipe: small model, 2500 steps (~9 min, 2 cores)
    python train.py --env twoRoom --resume                # continue an interrupted run
    python train.py --bench                               # print speed figures, write nothing
    torchrun --nproc_per_node 4 train.py --env twoRoom --batch 32   # 4 processes (GPUs) x 32 clips

On a CUDA GPU the recipe is the paper's model and schedule; elsewhere it is the CPU recipe
(subjepa.RECIPES). Each run writes its checkpoint (runs/<env>.pt) and, beside it, its log (runs/<env>.log).
Under torchrun --batch is per process and the regularizer sees the whole batch of all processes (README).
"""
import argparse
import dataclasses
import math
import os
import sys
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import subjepa as sj

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--env", default="twoRoom", help=f"environment: {', '.join(sj.PRESETS)}")
p.add_argument("--subspaces", type=sj.number(int, 0), default=None, help="K: 0 = global SIGReg (LeWM); default: the paper's K for --env")
p.add_argument("--recipe", choices=list(sj.RECIPES), default=None,
               help="paper: the paper's 18M model, 30k steps of 128 clips (a GPU job); cpu: the 1.2M model, 2500 steps "
                    "of 32 (6000 for pushT, reacher, cube; minutes on a CPU). Default: paper on a CUDA GPU, cpu elsewhere. The four flags below override it")
p.add_argument("--small", action="store_true", default=None, help="the 1.2M-parameter CPU model (subjepa.SMALL) instead of the paper's 18M")
p.add_argument("--steps", type=sj.number(int, 1), default=None, help="optimizer steps")
p.add_argument("--batch", type=sj.number(int, 1), default=None, help="clips per step, per process under torchrun (paper: 128 in all)")
p.add_argument("--lr", type=sj.number(float, 0, above=True), default=None, help="peak learning rate (AdamW; the paper's 5e-5 is for its 10-epoch schedule)")
p.add_argument("--warmup", type=sj.number(int, 0), default=None, help="linear warm-up steps (default: 5%% of --steps), then cosine decay")
p.add_argument("--lam", type=sj.number(float, 0), default=None, help="weight of the regularizer (default 0.09, the paper's)")
p.add_argument("--dropout", type=sj.number(float, 0), default=None, help="predictor dropout (default 0.1, the paper's)")
p.add_argument("--pos-std", type=sj.number(float, 0), default=None, help="std of the encoder's initial patch positions (default 0.02, the official; the CPU recipe of some worlds: 1, README)")
p.add_argument("--data", default=None, help="dataset directory in subjepa's format (default: data/<env>-<img>px, collected if missing)")
p.add_argument("--episodes", type=sj.number(int, 2), default=None, help="episodes to collect if the dataset is missing (default: subjepa.DATA_DEFAULTS)")
p.add_argument("--workers", type=sj.number(int, 1), default=None, help="collection worker processes (default: all cores)")
p.add_argument("--img", type=sj.number(int, 8), default=None, help="image size when collecting (default 64; paper: 224, then pass --patch 14)")
p.add_argument("--patch", type=sj.number(int, 1), default=None, help="ViT patch size (default 8)")
p.add_argument("--out", default=None, help="checkpoint path (default: runs/<env>.pt); its log goes beside it (.log)")
p.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is --out")
p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out with a new run")
p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the first available)")
p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the loss (default: on for CUDA; on a CPU, for runs of 1000 steps or more: the loss with bf16, the regularizer alone without)")
p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA and for CPUs with native bf16 matmuls)")
p.add_argument("--seed", type=sj.number(int, 0), default=None, help="seed of the model, the clip order, the dropout and the regularizer's directions (default 0)")
p.add_argument("--log-every", type=sj.number(int, 1), default=250, help="steps between log lines, validation and checkpoints")
p.add_argument("--bench", action="store_true", help="time training steps (fast path against eager fp32) and exit")

# what a run is: saved in its checkpoint, so that --resume continues the same run
RUN_FLAGS = ("recipe", "small", "steps", "batch", "lr", "warmup", "seed", "subspaces", "lam", "dropout", "pos_std", "img", "patch")
CONFIG_FLAGS = ("subspaces", "lam", "dropout", "pos_std")   # the run flags that set a Config field


def make_config(img, action_dim):
    cfg = sj.Config(**{**sj.PRESETS[args.env], **(sj.SMALL if run["small"] else {}), "img": img,
                       "patch": run["patch"], "action_dim": action_dim})
    for k in CONFIG_FLAGS:
        if run[k] is not None:
            setattr(cfg, k, run[k])
    return cfg


def seed_of(use, *key):   # a seed for one use (DROPOUT, DIRECTIONS) from non-negative integers (run seed, step, ...)
    return int(np.random.SeedSequence((use, *key)).generate_state(1, np.uint64)[0] >> 1)


DROPOUT, DIRECTIONS = 1, 2   # (a key's trailing zeros do not change its SeedSequence: the use goes first)


def train_step(model, opt, loss_fn, frames, actions, step):
    """One optimizer step; returns (total, prediction, regularizer) averaged over the ranks."""
    torch.manual_seed(seed_of(DROPOUT, run["seed"], step, rank))   # dropout masks; --resume needs no RNG state
    model.reg.seed = seed_of(DIRECTIONS, run["seed"], step)        # the regularizer's directions: alike on every rank
    with ctx():
        losses = loss_fn(frames, actions)
    opt.zero_grad(set_to_none=True)
    losses[0].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return sj.mean_over_ranks(torch.stack(losses).detach())


def lr_at(s):   # linear warm-up, then cosine decay to zero
    if s < warmup:
        return run["lr"] * (s + 1) / warmup
    return run["lr"] * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, run["steps"] - warmup)))


@torch.no_grad()
def validate(batches=8):
    """Recalibrate BatchNorm on training clips, then the losses on held-out clips, the same ones every time."""
    g = torch.Generator(device=device).manual_seed(1234)
    model.reg.seed = 1234
    with ctx():
        model.calibrate(tqdm((train.sample(run["batch"], g, rank, ranks) for _ in range(20)), total=20, leave=False,
                             desc="calibrate BatchNorm", dynamic_ncols=True, disable=rank > 0))
        losses = torch.stack([torch.stack(model.loss(*val.sample(run["batch"], g, rank, ranks))).float()
                              for _ in range(batches)])
    model.train()
    return sj.mean_over_ranks(losses.mean(0))


def save():   # rank 0 writes; the others hold the same weights
    if rank == 0:
        sj.save_checkpoint(out, model=model.state_dict(), optimizer=opt.state_dict(), config=dataclasses.asdict(cfg),
                           step=step, env=args.env, data=os.path.abspath(data), generator=gen.get_state(),
                           action_mean=ds.meta["action_mean"], action_std=ds.meta["action_std"], run=run,
                           world=ds.meta.get("world", 1))


def diverged(what, value):
    raise SystemExit(f"error: the {what} is {value.item()} at step {step}: training diverged. "
                     + (f"{out} keeps the last good checkpoint (step {saved_step}). " if saved_step else "")
                     + "Lower --lr and train again")


def log(line):
    if rank == 0:
        tqdm.write(line)
        with open(log_path, "a") as f:
            print(line, file=f)


if __name__ == "__main__":   # (a guard: dataset workers re-import this file)
    args = sj.parse_args(p)
    rank, ranks, args.device = sj.join_ranks(args.device)   # (0, 1) unless run by torchrun
    if rank:
        sys.stdout = open(os.devnull, "w")   # rank 0 speaks for all; errors still reach stderr

    # -------------------------------------------------------------------------
    # setup: the recipe, and every check that can fail before any work is done
    device, use_compile, use_bf16 = args.device, args.compile, args.bf16
    ctx = lambda: sj.precision(device, use_bf16)
    out = args.out or f"runs/{args.env}.pt"
    log_path = os.path.splitext(out)[0] + ".log"
    given = {k: getattr(args, k) for k in RUN_FLAGS if getattr(args, k) is not None}
    ckpt = None
    if args.bench:
        given.setdefault("recipe", "paper")   # --bench times the paper's model unless told otherwise
    elif args.resume:
        if args.overwrite:
            raise sj.InputError("--resume continues the run at --out and --overwrite replaces it: pass one of them")
        if not os.path.isfile(out):
            raise sj.InputError(f"nothing to resume: no checkpoint at {out}; drop --resume to start a run, "
                                "or pass the --out of the run to continue")
        ckpt = sj.load_checkpoint(out)
        saved = ckpt.get("run", {})
        clash = [f"--{k.replace('_', '-')} {v} (the run has {saved[k]})" for k, v in given.items() if k in saved and saved[k] != v]
        if ckpt["env"] != args.env:
            clash.insert(0, f"--env {args.env} (the run has {ckpt['env']})")
        if clash:
            raise sj.InputError(f"--resume continues {out} as it was started; these flags contradict it: "
                                f"{', '.join(clash)}. Drop them, or start a new run with another --out")
        if saved.get("ranks", 1) != ranks:
            raise sj.InputError(f"{out} was trained by {saved.get('ranks', 1)} processes and this is {ranks}: --batch is "
                                "per process, so resume with as many (torchrun --nproc_per_node ...)")
        given = {**saved, **given}
    elif os.path.isfile(out) and not args.overwrite:   # (a folder: `writable` below says so)
        raise sj.InputError(f"{out} already exists: add --resume to continue it, --overwrite to replace it, "
                            "or pass another --out")
    if given.get("dropout", 0) >= 1:
        raise sj.InputError(f"--dropout {given['dropout']} drops everything: pass a rate below 1 (the paper's is 0.1)")
    recipe = given.get("recipe") or ("paper" if device.type == "cuda" else "cpu")
    world_recipe = {k: v for k, v in sj.WORLD_RECIPES.get((recipe, args.env), {}).items()
                    if k not in given}                             # what the recipe changes for this world
    run = {**dict.fromkeys(RUN_FLAGS), "seed": 0, "img": 64, "patch": 8, **sj.RECIPES[recipe], **world_recipe,
           **given, "recipe": recipe}
    cfg = make_config(run["img"], sj.PRESETS[args.env]["action_dim"])   # a bad --img / --patch fails now, not after collecting
    warmup = run["warmup"] if run["warmup"] is not None else run["steps"] // 20
    torch.manual_seed(run["seed"])
    gen = torch.Generator(device=device).manual_seed(run["seed"])   # clip order (the same on every rank)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    if use_compile is None:   # on a CPU, on runs long enough to pay back its minute of compiling: the loss with
        long_run = args.bench or run["steps"] >= 1000   # bf16; in fp32, where the rest does not pay, the regularizer's
        use_compile = (True if use_bf16 else "regularizer") if long_run else False   # kernels alone (README)
    compiled = lambda model, net: model.compiled_loss(net, whole=use_compile is True) if use_compile else net

    if args.bench:   # synthetic frames resident on the device; the paper's model unless --small
        batch = run["batch"]
        fake = sj.Dataset(frames=torch.randint(0, 256, (4096, cfg.img, cfg.img, 3), dtype=torch.uint8).numpy(),
                          actions=torch.randn(4096, cfg.action_dim).numpy(), states=None,
                          episodes=torch.arange(0, 4097, 64).numpy(),
                          meta=dict(action_mean=[0.0] * cfg.action_dim, action_std=[1.0] * cfg.action_dim))
        clips = sj.Clips(fake, range(64), device=device)
        flops = sj.train_flops(cfg, batch)
        print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else device}, batch {batch} "
              + (f"per process x {ranks} processes " if ranks > 1 else "") +
              f"clips of 4 frames at {cfg.img}px/patch {cfg.patch}, K={cfg.subspaces}: {flops / 1e12:.3f} TFLOP per step "
              + ("and process " if ranks > 1 else "") + "(matmuls, forward + backward = 3x forward); eager fp32 uses TF32 matmuls on CUDA")
        fast_name = " + ".join({True: ["compile"], "regularizer": ["compile (regularizer)"]}.get(use_compile, [])
                               + ["bf16"] * use_bf16) or "eager again"
        def bench_path(name, fast, c):   # the same weights and batches for every path
            torch.manual_seed(run["seed"])
            model = sj.JEPA(c).to(device).train()
            net = model if ranks == 1 else DistributedDataParallel(model)
            return dict(name=name, model=model, opt=torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3),
                        loss_fn=compiled(model, net) if fast else net,
                        ctx=lambda: sj.precision(device, fast and use_bf16), seconds=0.0, comm=0.0,
                        gen=torch.Generator(device=device).manual_seed(run["seed"]))

        paths = [bench_path("eager fp32", False, cfg), bench_path(fast_name, True, cfg)]
        if cfg.subspaces:   # what the subspace regularizer costs: the fast path again with the global SIGReg
            paths.append(bench_path(f"{fast_name}, K=0", True, dataclasses.replace(cfg, subspaces=0)))
        n = 10 if device.type == "cpu" else 30
        for i in range(2 * n):   # the first n are warm-up (and compilation); then the paths take turns, a step each
            for q in paths:
                ctx = q["ctx"]
                sj.synchronize(device)
                t0, sj.EppsPulley.seconds = time.perf_counter(), 0.0
                losses = train_step(q["model"], q["opt"], q["loss_fn"], *clips.sample(batch, q["gen"], rank, ranks), i)
                sj.synchronize(device)
                if i >= n:
                    q["seconds"] += time.perf_counter() - t0
                    q["comm"] += sj.EppsPulley.seconds
                if i == 0:   # same weights, batch and directions in the first two: they agree to bf16 precision
                    print(f"{q['name']:22s} first step: loss {losses[0].item():.4f} pred {losses[1].item():.5f} reg {losses[2].item():.4f}")
        if device.type == "cuda":
            print(f"peak memory (all paths) {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
        for q in paths:
            ms = 1000 * q["seconds"] / n
            comm = f", {1000 * q['comm'] / n:.1f} ms of it in the regularizer's all_reduce" if ranks > 1 else ""
            print(f"{q['name']:22s} {ms:8.1f} ms/step {1000 * batch * ranks / ms:8.0f} clips/s "
                  f"{ranks * flops / ms / 1e9:.3g} TFLOP/s{comm}")
        eager, fast = paths[0]["seconds"], paths[1]["seconds"]
        print(f"speed-up {eager / fast:.2f}x" + (f"; the fast path's step at K={cfg.subspaces} against K=0: "
                                                 f"{100 * (fast / paths[2]['seconds'] - 1):+.1f}%" if cfg.subspaces else ""))
        raise SystemExit

    sj.writable(out, "--out")
    data = args.data or (ckpt["data"] if ckpt else f"data/{args.env}-{run['img']}px")
    ds = None
    if os.path.exists(data) or args.data is not None:
        ds = sj.load_dataset(data)
        sj.current_data(ds, data, default=args.data is None and not ckpt)   # a default dataset must be today's
        if args.episodes is not None and args.episodes != ds.meta["episodes"]:
            raise sj.InputError(f"{data} holds {ds.meta['episodes']} episodes, not --episodes {args.episodes}: delete "
                                f"it (rm -r {data}) to collect {args.episodes}, or leave --episodes out to use it")
    elif ranks > 1:
        raise sj.InputError(f"no dataset at {data}: collect it before torchrun (python subjepa.py --collect {args.env} "
                            f"--out {data}), on every machine, or pass --data")
    else:
        sj.writable(data, "--data")
    print(f"recipe {recipe} ({'chosen' if 'recipe' in given else 'CUDA GPU' if device.type == 'cuda' else 'no CUDA GPU here'}): "
          f"{'the 1.2M-parameter small model' if run['small'] else 'the paper-size model'}, {run['steps']} steps of "
          f"{run['batch']} clips{f' x {ranks} processes' if ranks > 1 else ''}, lr {run['lr']:g}"
          + "".join(f", {k} {v:g} (for {args.env})" for k, v in world_recipe.items())
          + ("" if "recipe" in given else f"; --recipe {'cpu' if recipe == 'paper' else 'paper'} forces the other"))

    # -------------------------------------------------------------------------
    # data
    if ds is None:
        print(f"collecting the {args.env} dataset into {data}")
        sj.collect(args.env, data, episodes=args.episodes, img=run["img"], workers=args.workers)   # data seed 0
        ds = sj.load_dataset(data)
    if ds.meta["env"] != args.env:
        raise sj.InputError(f"{data} holds {ds.meta['env']} data, not {args.env}: pass the matching --env or --data")
    if ds.meta["img"] != run["img"] and ("img" in given or ckpt):
        raise sj.InputError(f"{data} holds {ds.meta['img']} px frames, but the run is at {run['img']} px: "
                            "pass the matching --img or --data")
    run["img"] = ds.meta["img"]
    if len(ds.episodes) < 3:
        raise sj.InputError(f"{data} has {len(ds.episodes) - 1} episode: training needs at least 2 (some are held out)")
    train_eps, val_eps = sj.split_episodes(len(ds.episodes) - 1)
    train = sj.Clips(ds, train_eps, device=device)
    val = sj.Clips(ds, val_eps, device=device)
    print(f"{data}: {len(ds.frames)} frames, {len(train)} training clips, {len(val)} held-out clips "
          f"({len(val_eps)} held-out episodes)")

    # -------------------------------------------------------------------------
    # model, optimizer, resume
    cfg = sj.Config(**ckpt["config"]) if ckpt else make_config(ds.meta["img"], ds.actions.shape[1])
    if cfg.action_dim != ds.actions.shape[1]:
        raise sj.InputError(f"{data} has {ds.actions.shape[1]}-D actions, the model {cfg.action_dim}-D: pass the matching --data")
    model = sj.JEPA(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=run["lr"], weight_decay=1e-3)
    step = 0
    if ckpt:
        sj.load_weights(model, ckpt, out)
        opt.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        gen.set_state(ckpt["generator"])
        print(f"resumed {out} at step {step}")
    elif os.path.exists(log_path) and rank == 0:
        os.remove(log_path)    # a new run (--overwrite): a new log
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)   # the work starts: now make runs/
    saved_step = step
    run.update(warmup=warmup, **{k: getattr(cfg, k) for k in CONFIG_FLAGS}, ranks=ranks)
    log(f"{'Sub-JEPA, K=%d' % cfg.subspaces if cfg.subspaces else 'LeWM, global SIGReg'}; "
        + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in model.param_counts().items())
        + f"; {device}, {torch.get_num_threads()} threads, compile {use_compile}, bf16 {use_bf16}; "
        + ", ".join(f"{k} {v}" for k, v in run.items())
        + f"; reg of Gaussian embeddings: {model.reg.null():.2f}")
    net = model if ranks == 1 else DistributedDataParallel(model)
    loss_fn = compiled(model, net)

    # -------------------------------------------------------------------------
    # training loop
    model.train()
    bar = tqdm(total=run["steps"], initial=step, desc="train", dynamic_ncols=True, disable=rank > 0)
    t0, done0, start = time.perf_counter(), step, step
    try:
        while step < run["steps"]:
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            total, pred, reg = train_step(model, opt, loss_fn, *train.sample(run["batch"], gen, rank, ranks), step)
            step += 1
            bar.update()
            if not torch.isfinite(total):
                diverged("loss", total)
            if step == start + 3:       # after warm-up, time 10 steps and say how long the run will take
                t3 = time.perf_counter()
            if step == start + 13:
                s = (time.perf_counter() - t3) / 10
                tqdm.write(f"about {s:.2f} s a step here: {(run['steps'] - step) * s / 60:.0f} min to go for "
                           f"{run['steps'] - step} steps, plus validation every {args.log_every}")
            if step % args.log_every == 0 or step == run["steps"]:
                sj.synchronize(device)
                ms = 1000 * (time.perf_counter() - t0) / (step - done0)
                v_total, v_pred, v_reg = validate()
                if not torch.isfinite(v_total):   # checked before the save: a NaN model is never written
                    diverged("held-out loss", v_total)
                bar.set_postfix_str(f"pred {pred.item():.4f} reg {reg.item():.3f}")
                log(f"step {step} | loss {total.item():.4f} pred {pred.item():.4f} reg {reg.item():.3f} | "
                    f"val pred {v_pred:.4f} reg {v_reg:.3f} | lr {lr_at(step - 1):.2e} | {ms:.0f} ms/step "
                    f"{1000 * run['batch'] * ranks / ms:.0f} clips/s")
                save()
                saved_step = step
                t0, done0 = time.perf_counter(), step
    except KeyboardInterrupt:
        bar.close()
        raise KeyboardInterrupt(f"at step {step}; {out} holds step {saved_step}" +
                                (": add --resume to continue" if saved_step else "")) from None
    bar.close()
    print(f"saved {out} (step {step}) and its log {log_path}\nnext, plan with it: "
          f"python plan.py --env {args.env} --ckpt {out}")
