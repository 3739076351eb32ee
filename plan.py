"""
Plan with a trained world model and measure success by the papers' protocol: 50
episodes from held-out dataset episodes, goal = the state 25 steps after the start, 50 environment
steps, CEM with 300 samples x 30 elites x 30 iterations over 5 action blocks, re-planned every 25 steps.

    python plan.py --env twoRoom                      # uses runs/twoRoom.pt
    python plan.py --env twoRoom --policy random      # the floor any model must beat
    python plan.py --env twoRoom --json runs/twoRoom-plan.json
    python plan.py --env twoRoom --probe --prediction --no-plan   # why does planning fail? (README)
    python plan.py --bench                            # time CEM solves, write nothing
    torchrun --nproc_per_node 4 plan.py --env twoRoom # the episodes split over 4 processes (GPUs); same results
"""
import argparse
import functools
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import subjepa as sj

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--env", default="twoRoom", help=f"environment: {', '.join(sj.PRESETS)}")
p.add_argument("--ckpt", default=None, help="checkpoint (default: runs/<env>.pt; with --policy random or oracle, its data)")
p.add_argument("--data", default=None, help="dataset whose held-out episodes give starts and goals (default: the checkpoint's)")
p.add_argument("--policy", choices=["model", "random", "oracle", "oracle-frame"], default="model",
               help="plan with the model; act at random (the floor); oracle: the same CEM scored by the true "
                    "simulator (the protocol's ceiling; cheaper with --samples, --iters); oracle-frame: the same, "
                    "told only what a frame shows, as the model is (each solve simulates from rest: no velocities)")
p.add_argument("--episodes", type=sj.number(int, 1), default=50, help="evaluation episodes (paper: 50)")
p.add_argument("--seed", type=int, default=42, help="evaluation seed: picks starts and goals, seeds CEM (paper: 42)")
p.add_argument("--budget", type=sj.number(int, 1), default=50, help="environment steps per episode (paper: 50)")
p.add_argument("--goal-offset", type=sj.number(int, 1), default=25, help="the goal is the dataset state this many steps after the start (paper: 25)")
p.add_argument("--horizon", type=sj.number(int, 1), default=5, help="action blocks planned (paper: 5, i.e. 25 steps)")
p.add_argument("--samples", type=sj.number(int, 1), default=None, help="CEM samples per iteration (default 300, the paper's)")
p.add_argument("--elites", type=sj.number(int, 2), default=None, help="CEM elites (default 30, the paper's)")
p.add_argument("--iters", type=sj.number(int, 1), default=None, help="CEM iterations (default 30, the paper's)")
p.add_argument("--probe", action="store_true", help="also probes: R^2 of what the frames show (positions, angles), "
               "read from frozen embeddings by ridge regression (and by nearest neighbours: held at all?) fit on "
               "training frames, scored on held-out ones")
p.add_argument("--prediction", action="store_true", help="also the model's rollout error after 1..5 blocks and how often "
               "its planning cost orders two plans as the simulator does (by the distance to the goal, and by each "
               "part of the state's: which one the cost follows), and its error on plans unlike the data's")
p.add_argument("--plan", action=argparse.BooleanOptionalAction, default=True, help="plan (--no-plan: the diagnostics only)")
p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the first available)")
p.add_argument("--json", default=None, help="write the results to this JSON file (replaced if it exists)")
p.add_argument("--png", default=None, help="filmstrip of the first episodes (default: runs/<env>-<policy>.png, replaced)")
p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the rollout, with CUDA graphs on CUDA (default: on for CUDA; on a CPU with bf16, from 10 episodes)")
p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA and for CPUs with native bf16 matmuls)")
p.add_argument("--small", action="store_true", default=None, help="--bench only: time the CPU-sized model")
p.add_argument("--img", type=sj.number(int, 8), default=None, help="--bench only: image size (default 64; paper: 224, with --patch 14)")
p.add_argument("--patch", type=sj.number(int, 1), default=None, help="--bench only: ViT patch size (default 8)")
p.add_argument("--bench", action="store_true", help="time CEM solves (fast path against eager fp32) and exit")
def speed_up(model, fast=True):
    """The fast path: the rollout compiled (its 5 predictor calls become one graph; on CUDA, replayed as a
    CUDA graph) and bf16. Returns the context to plan in (subjepa.precision)."""
    if fast and use_compile:
        model.rollout = torch.compile(model.rollout, mode="reduce-overhead" if device.type == "cuda" else None)
    return lambda: sj.precision(device, fast and use_bf16)


def write_json(result):
    if args.json:
        with sj.atomic(args.json) as tmp, open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        print(f"results in {args.json}")


if __name__ == "__main__":
    args = sj.parse_args(p)
    rank, ranks, args.device = sj.join_ranks(args.device)   # (0, 1) unless run by torchrun
    if rank:
        sys.stdout = open(os.devnull, "w")   # rank 0 speaks for all; errors still reach stderr
    device, use_compile, use_bf16 = args.device, args.compile, args.bf16
    if use_compile is None:   # on a CPU
        use_compile = use_bf16 and args.policy == "model" and args.episodes >= 10   # pays back from 10 episodes (README)
    bench_only, cem_flags = ([f"--{f}" for f in flags if getattr(args, f) is not None]
                             for flags in (("small", "img", "patch"), ("samples", "elites", "iters")))
    if bench_only and not args.bench:   # flags that would do nothing are refused, not ignored
        raise sj.InputError(f"{bench_only[0]} is for --bench only (a plan takes the model's size from its checkpoint): "
                            "drop it")
    if cem_flags and args.policy == "random" and not args.bench:
        raise sj.InputError(f"{cem_flags[0]} sets the CEM search, which --policy random does not run: drop it")
    if args.png and not args.png.lower().endswith(".png"):
        raise sj.InputError(f"--png {args.png}: the filmstrip is a PNG image; pass a file's name ending in .png")
    cem_kwargs = dict(samples=args.samples or 300, elites=args.elites or 30, iters=args.iters or 30)
    args.samples, args.elites, args.iters = cem_kwargs.values()
    if args.elites > args.samples:
        raise sj.InputError(f"--elites {args.elites} is more than --samples {args.samples}: CEM keeps the best "
                            "elites of the samples, so pass --elites <= --samples")

    if args.bench:   # random weights and frames: speed does not depend on them
        cfg = sj.Config(**{**sj.PRESETS[args.env], **(sj.SMALL if args.small else {}), "img": args.img or 64,
                           "patch": args.patch or 8})
        fast_name = " + ".join(["compile"] * use_compile + ["bf16"] * use_bf16) or "eager again"
        paths = {}
        for name, fast in (("eager fp32", False), (fast_name, True)):
            torch.manual_seed(0)   # the same weights for both, all at random (AdaLN-zero's gates too: plans then matter)
            model = sj.JEPA(cfg).to(device).eval()
            with torch.no_grad():
                for w in model.parameters():
                    w.add_(0.1 * torch.randn_like(w))
            if not fast:   # the official code's work: no keys and values cached across blocks, every
                model.rollout = functools.partial(sj.JEPA.rollout, model, cached=False)   # candidate at once
                model.ROWS = {}
            paths[name] = model, speed_up(model, fast)
        flops = sj.plan_flops(cfg, args.samples, args.iters, args.horizon)
        print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else device}: one CEM solve = {args.samples} samples x {args.iters} iterations x {args.horizon} blocks = "
              f"{flops / 1e12:.3f} TFLOP of predictor matmuls per episode")
        for E in sorted({1, args.episodes}):
            frames = torch.randint(0, 256, (2, E, 3, cfg.img, cfg.img), dtype=torch.uint8, device=device)
            ms, plans = {name: [] for name in paths}, {}
            for i in range(4):   # the paths take turns, a solve each; the first compiles and warms up
                for name, (model, ctx) in paths.items():
                    gen = torch.Generator(device=device).manual_seed(0)
                    sj.synchronize(device)
                    t0 = time.perf_counter()
                    with ctx():
                        plans[name] = model.plan(*frames, args.horizon, gen, **cem_kwargs)
                    sj.synchronize(device)
                    ms[name].append(1000 * (time.perf_counter() - t0))
            best = {name: min(t[1:]) for name, t in ms.items()}
            for name, t in best.items():
                print(f"{name:16s} {E:3d} episodes: {t:9.1f} ms per solve ({E * flops / t / 1e9:.3g} TFLOP/s)")
            plain = paths["eager fp32"][0]
            with torch.no_grad():   # the same answer: what the plain model says each path's plans cost
                z0, zg = (plain.encode(f[:, None]) for f in frames)
                cost = {name: plain.cost(z0, zg, p[:, None]).mean().item() for name, p in plans.items()}
            print(f"speed-up at {E} episodes: {best['eager fp32'] / best[fast_name]:.2f}x; the plans' cost in the plain "
                  f"model: {cost['eager fp32']:.4g} and {cost[fast_name]:.4g} ({100 * (cost[fast_name] / cost['eager fp32'] - 1):+.1f}%)")
        raise SystemExit

    # -----------------------------------------------------------------------------
    # model and data
    model, ckpt = None, None
    if args.policy == "model":
        model, ckpt = sj.load_model(args.ckpt or f"runs/{args.env}.pt", device, args.env)
    elif args.ckpt:   # a baseline given a checkpoint plans on the checkpoint's data, as its model would
        ckpt = sj.load_checkpoint(args.ckpt)
    if ckpt and ckpt["env"] != args.env:
        raise sj.InputError(f"the checkpoint was trained on {ckpt['env']}, not {args.env}: pass the matching --env")
    png = args.png or f"runs/{args.env}-{args.policy}.png"
    for path, flag in ((args.json, "--json"), (png, "--png")):   # fail now, not after the evaluation
        if path:
            sj.writable(path, flag)
    data = args.data or (ckpt["data"] if ckpt else f"data/{args.env}-64px")
    ds = sj.load_dataset(data)
    sj.current_data(ds, data, default=args.data is None and not ckpt)   # a default dataset must be today's
    stats = ckpt or ds.meta   # the action statistics the plans are z-scored with
    mean, std = (torch.tensor(stats[k], dtype=torch.float32, device=device) for k in ("action_mean", "action_std"))
    if ds.meta["env"] != args.env:
        raise sj.InputError(f"{data} holds {ds.meta['env']} data, not {args.env}: pass the matching --data")
    if model and model.cfg.img != ds.meta["img"]:
        raise sj.InputError(f"the model sees {model.cfg.img} px frames and {data} holds {ds.meta['img']} px ones: "
                            "pass the --data the model was trained on")
    F = model.cfg.frameskip if model else sj.Config.frameskip   # raw steps per action block
    if not (args.plan or args.probe or args.prediction):
        raise sj.InputError("--no-plan leaves nothing to do: add --probe or --prediction, or drop --no-plan")
    if (args.probe or args.prediction) and model is None:
        raise sj.InputError(f"--probe and --prediction diagnose a model: drop --policy {args.policy}")
    diagnostics = {}
    if args.probe:
        r2, nn, px, spread = sj.probe(model, ds)
        rms, rms_nn = sj.probe_rms(r2, spread), sj.probe_rms(nn, spread)
        diagnostics.update(probe_r2=r2, probe_r2_neighbours=nn, probe_r2_pixels=px, probe_rms=rms,
                           probe_rms_neighbours=rms_nn)
        print("linear probe, R^2 on held-out frames (1: read off linearly, 0: not at all), from the embeddings "
              "(their 5 nearest neighbours: held at all?; linearly from 8x8 pixels): "
              + ", ".join(f"{k} {v:.3f} ({nn[k]:.3f}; {px[k]:.3f})" for k, v in r2.items()))
        print("  the same as RMS errors in the world's units, to set beside its success tolerance (README): "
              + ", ".join(f"{k} {v:.3g} ({rms_nn[k]:.3g})" for k, v in rms.items()))
    if args.prediction:
        diagnostics.update(q := sj.prediction_quality(model, ds))
        print("rollout error after 1..5 blocks, relative to the embeddings' variance (0 perfect, 1 useless): "
              + " ".join(f"{e:.3f}" for e in q["rollout_error"]))
        print(f"the planning cost orders {100 * q['ranking']:.1f}% of plan pairs as the simulator's distance to "
              "the goal does (50% is chance); as each part's distance alone: "
              + ", ".join(f"{part} {100 * r:.1f}%" for part, r in q["ranking_by"].items()))
        print("error 5 blocks ahead against where each plan truly ends, on the data's own actions, noisy versions "
              "and random plans: " + " ".join(f"{e:.3f}" for e in q["error_by_plan"].values())
              + " (a planner tries plans unlike the data: where the model is much worse on them, it plans by its "
              "errors; more varied data)")
    if not args.plan:
        if rank == 0:
            write_json(dict(env=args.env, ckpt=args.ckpt or f"runs/{args.env}.pt", **diagnostics))
        raise SystemExit
    if model:
        ctx = speed_up(model)   # (after the diagnostics, which run eager and in fp32)

    # starts and goals: a random step of a held-out episode, and the state goal_offset steps later
    rng = np.random.default_rng(args.seed)
    _, held = sj.split_episodes(len(ds.episodes) - 1)
    long_enough = [e for e in held if ds.episodes[e + 1] - ds.episodes[e] > args.goal_offset]
    if not long_enough:
        raise sj.InputError(f"no held-out episode in {data} is longer than {args.goal_offset} steps")
    eps = rng.choice(long_enough, args.episodes)
    starts = np.array([rng.integers(ds.episodes[e], ds.episodes[e + 1] - args.goal_offset) for e in eps])
    goals = starts + args.goal_offset
    # under torchrun each rank plans a contiguous share of the episodes (every rank drew them all, alike)
    if args.episodes < ranks:
        raise sj.InputError(f"--episodes {args.episodes} is fewer than the {ranks} processes: pass at least {ranks}")
    mine = np.array_split(np.arange(args.episodes), ranks)[rank]
    first, eps, starts, goals = mine[0], eps[mine], starts[mine], goals[mine]

    envs = [sj.make_env(args.env, ds.meta["img"]) for _ in eps]
    goal_imgs = [env.render_state(ds.states[g]) for env, g in zip(envs, goals)]   # the goal image, drawn from its state
    obs = np.stack([env.reset(options=dict(state=ds.states[s], goal=ds.states[g]))[0]
                    for env, s, g in zip(envs, starts, goals)])                      # (E, H, W, 3)
    to_torch = lambda x: torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).to(device)  # (E, 3, H, W)
    goal_t = to_torch(goal_imgs)
    met = np.array([env.is_success(ds.states[s], ds.states[g]) for env, s, g in zip(envs, starts, goals)])

    def oracle_cost(a):   # (E, S, H, F*A) z-scored -> (E, S): each world's distance to its goal after the plan
        raw = (a.reshape(*a.shape[:2], -1, A) * std + mean).clamp(-1, 1).cpu().numpy()
        state = [env.get_state() if args.policy == "oracle" else env.at_rest(env.get_state()) for env in envs]
        return torch.tensor([[env.simulate(s, plan) for plan in plans] for env, s, plans in zip(envs, state, raw)],
                            device=a.device)

    # -----------------------------------------------------------------------------
    # the control loop: plan all episodes together, execute the whole plan, plan again
    E, A = len(eps), envs[0].action_space.shape[0]
    gen = torch.Generator(device=device).manual_seed(args.seed)
    success = np.zeros(E, bool)
    film = [obs[:4].copy()]   # the filmstrip's episodes only (a copy: a view would keep every episode's frame)
    solve_ms = []
    solves = -(-args.budget // (args.horizon * F))   # re-plan after each executed plan of horizon * F steps
    closest = np.full(E, np.inf)
    t_start = time.perf_counter()
    with tqdm(total=solves * args.iters, desc=f"plan {E} episodes ({solves} solves of {args.iters} CEM iterations)",
              unit="iter", dynamic_ncols=True, disable=args.policy == "random" or rank > 0) as bar:
        for t in range(args.budget):   # (the bar closes on Ctrl-C too, so `interrupted` is the last line printed)
            if t % (args.horizon * F) == 0:
                if args.policy == "random":
                    plan = rng.uniform(-1, 1, (args.episodes, args.horizon * F, A))[first:first + E]
                else:
                    sj.synchronize(device)
                    t0 = time.perf_counter()
                    if model is None:   # an oracle
                        blocks = sj.cem(oracle_cost, (E, args.horizon, F * A), generator=gen, device=device,
                                        progress=bar, rows=(first, args.episodes), **cem_kwargs)
                    else:
                        frames = to_torch(obs)
                        with ctx():
                            blocks = model.plan(frames, goal_t, args.horizon, gen, progress=bar,
                                                rows=(first, args.episodes), **cem_kwargs)    # (E, H, F*A), z-scored
                        if t == 0:
                            first_solve = frames, blocks   # for the comparison with the data's actions, below
                    plan = (blocks.view(E, -1, A) * std + mean).clamp(-1, 1).cpu().numpy()  # (E, H*F, A) raw actions
                    solve_ms.append(1000 * (time.perf_counter() - t0))
                k = t
            results = [env.step(plan[i, t - k].astype(np.float32)) for i, env in enumerate(envs)]
            obs = np.stack([r[0] for r in results])
            success |= [r[4]["success"] for r in results]          # the environment's success test against the goal
            closest = np.minimum(closest, [env.distance(env.get_state(), env.goal) for env in envs])
            if (t + 1) % 5 == 0:
                film.append(obs[:4].copy())
            if t + 1 == min(args.budget, args.horizon * F):   # the first plan executed
                reached_first = success.copy()
    wall = time.perf_counter() - t_start
    # the model or the search? the first solve's plan against the data's own actions, which reach the goal
    costs = np.zeros((E, 0))
    if model and args.goal_offset == args.horizon * F <= args.budget:   # the data's actions fill the first plan
        vars(model).pop("rollout", None)   # the eager rollout: the compiled one is built for CEM's batches
        obs0, plan0 = first_solve
        data_plan = ((torch.tensor(ds.actions[starts[:, None] + np.arange(args.goal_offset)], device=device) - mean)
                     / std).view_as(plan0)
        with torch.no_grad(), ctx():
            costs = model.cost(model.encode(obs0[:, None]), model.encode(goal_t[:, None]),
                               torch.stack([plan0, data_plan], 1)).cpu().numpy()   # (E, 2): its plan's, the data's

    # -----------------------------------------------------------------------------
    # report (under torchrun, rank 0 gathers every rank's episodes, in order, and reports them all)
    film = [np.concatenate([f[i] for f in film] + [np.full_like(goal_imgs[i][:, :4], 255), goal_imgs[i]], 1)
            for i in range(min(4, E))]   # for the first episodes, the frames every 5 steps, then the goal image
    final = np.stack([env.get_state() for env in envs])   # where each episode ended: which part of the goal it missed
    parts = sj.gather(dict(success=success, closest=closest, met=met, starts=starts, goals=goals, film=film,
                           final=final, solve_ms=solve_ms, wall=wall, costs=costs, reached_first=reached_first))
    if rank:
        raise SystemExit
    success, closest, met, starts, goals, film, final, costs, reached_first = (
        np.concatenate([q[k] for q in parts]) for k in
        ("success", "closest", "met", "starts", "goals", "film", "final", "costs", "reached_first"))
    solve_ms, wall, E = [ms for q in parts for ms in q["solve_ms"]], max(q["wall"] for q in parts), args.episodes
    n, rate = int(success.sum()), float(success.mean())
    err = (rate * (1 - rate) / E) ** 0.5
    rest = ~met   # the episodes whose start does not already meet the goal
    rest_rate = float(success[rest].mean()) if rest.any() else None
    result = dict(env=args.env, policy=args.policy, episodes=E, successes=n, success_rate=rate, stderr=err,
                  already_met=int(met.sum()), success_rate_not_met=rest_rate,
                  closest_median=float(np.median(closest)), closest=closest.tolist(), start_rows=starts.tolist(),
                  goal_rows=goals.tolist(), final_states=final.tolist(),
                  ms_per_solve=float(np.mean(solve_ms)) if solve_ms else None, solves=len(parts[0]["solve_ms"]),
                  episodes_per_solve=len(parts[0]["success"]), processes=ranks, seed=args.seed, budget=args.budget,
                  device=str(device), wall_s=wall, data=data,
                  ckpt=args.ckpt or (f"runs/{args.env}.pt" if model else None),
                  subspaces=model.cfg.subspaces if model else None, train_steps=ckpt["step"] if ckpt else None,
                  cem=None if args.policy == "random" else dict(**cem_kwargs, horizon=args.horizon),
                  **diagnostics)
    if costs.size:
        preferred = rest & (costs[:, 0] <= costs[:, 1])   # the model puts its plan nearer the goal than the data's actions
        result["first_solve"] = dict(plan_cost=costs[:, 0].tolist(), data_cost=costs[:, 1].tolist(),
                                     reached=reached_first.tolist(), plan_preferred=int(preferred.sum()),
                                     plan_preferred_missed=int((preferred & ~reached_first).sum()),
                                     data_preferred=int((rest & ~preferred).sum()))
    print(f"{args.env} {args.policy}: success {n}/{E} = {100 * rate:.1f} +- {100 * err:.1f} %"
          + (f" | {result['ms_per_solve']:.0f} ms per CEM solve of {result['episodes_per_solve']} episodes" if solve_ms else "")
          + f" | {wall:.1f} s")
    print(f"  {met.sum()} of {E} starts already meet their goal; success on the other {rest.sum()}: "
          + (f"{int(success[rest].sum())}/{rest.sum()} = {100 * rest_rate:.1f} %" if rest.any() else "none")
          + f" | closest approach to the goal: median {np.median(closest):.2f} success tolerances (< 1 is a success)")
    if costs.size:
        f = result["first_solve"]
        print(f"  first solve, the {rest.sum()} others: the model puts its plan nearer the goal than the data's own actions "
              f"(which reach it) in {f['plan_preferred']}, and {f['plan_preferred_missed']} of those plans miss the goal "
              f"(the model is wrong there, not the search); the data's actions nearer in {f['data_preferred']} (the "
              "search fell short of them: more --samples or --iters)")
    write_json(result)
    sj.write_png(png, np.concatenate(film[:4], 0).repeat(2, 0).repeat(2, 1))   # the filmstrip, 2x, nearest neighbour
    print(f"filmstrip (frames every 5 steps | goal) in {png}")
