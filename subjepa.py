"""
subjepa: JEPA world models that learn from pixels and plan with them, in one file.

Two papers, one model. LeWorldModel (LeWM, arXiv 2603.19312) trains a ViT encoder and an
action-conditioned predictor end to end with a next-embedding loss plus SIGReg, a test that pushes
the embeddings towards an isotropic Gaussian (from LeJEPA, Balestriero & LeCun 2025). Sub-JEPA
(arXiv 2605.09241) keeps everything and applies the same test inside K frozen random subspaces.

    frames (B,T,3,H,W) -> encoder+projector -> z (B,T,D) -> predictor(z[:, :-1], a) -> z_hat (B,T-1,D)
    loss = mse(z_hat, z[:, 1:]) + lambda * Reg(z)        Reg = SIGReg (K=0) or SubspaceSIGReg (K>0)

Planning: encode the current and the goal frame, roll the predictor out over H action blocks and let
CEM pick the blocks whose last predicted embedding lands nearest the goal's. The second half of the
file holds the four worlds (twoRoom, pushT, reacher, cube), their renderer, scripted data and datasets.

Shape letters used everywhere:
    B batch   T frames (time)   N patches   D embedding (192)   A raw action dim   F frameskip
    K subspaces (d = D/K each)  M random directions   S CEM samples   E planning problems   H horizon
"""
import argparse
import atexit
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import struct
import tempfile
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import gymnasium as gym
os.environ.setdefault("MUJOCO_GL", "disable")   # the worlds are drawn by numpy: no OpenGL, and no glfw import (it
import mujoco                                   # starts a subprocess in every process, collection workers included)
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm


class InputError(ValueError):
    """Bad input (a missing file, a wrong flag): the scripts print it as one line, not a traceback."""

# -----------------------------------------------------------------------------
# Config and per-environment presets


@dataclass
class Config:
    # pixels and actions
    img: int = 64             # image side in pixels (paper: 224; 64 here for speed)
    patch: int = 8            # ViT patch side (paper: 14 -> 256 patches; 8 at 64 px -> 64 patches)
    action_dim: int = 2       # A: raw action dimension of the environment
    frameskip: int = 5        # F: raw steps between two seen frames = actions per block (paper: 5)
    history: int = 3          # frames of context the predictor sees (paper: 3)
    # encoder: ViT-tiny trained from scratch
    dim: int = 192            # D: embedding width (paper: 192)
    enc_layers: int = 12      # paper: 12
    enc_heads: int = 3        # paper: 3 heads of 64
    enc_mlp: int = 768        # paper: 768
    pos_std: float = 0.02     # std of the encoder's initial patch positions (HF ViT's, the official: 0.02; README)
    proj_hidden: int = 2048   # hidden width of the BatchNorm MLP projectors (paper: 2048)
    # action encoder and predictor
    act_embed: int = 10       # bottleneck of the action encoder (paper: 10)
    act_hidden: int = 768     # hidden width of the action encoder (paper: 768)
    pred_layers: int = 6      # paper: 6
    pred_heads: int = 16      # paper: 16 ...
    pred_head_dim: int = 64   # ... of 64, so attention works at width 1024
    pred_mlp: int = 2048      # paper: 2048
    dropout: float = 0.1      # predictor dropout (paper: 0.1)
    # regularizer
    subspaces: int = 32       # K: 0 = global SIGReg (LeWM); K > 0 = Sub-JEPA (paper: 32, 16 for pushT)
    num_proj: int = 1024      # M: random directions drawn each step (paper: 1024)
    knots: int = 17           # quadrature knots of the Epps-Pulley integral on [0, 3] (paper: 17)
    lam: float = 0.09         # lambda, weight of the regularizer (paper: 0.09)
    reg_seed: int = 0         # seed of the frozen Sub-JEPA subspaces

    def __post_init__(self):
        if self.img % self.patch:
            raise InputError(f"image size {self.img} is not a multiple of the patch size {self.patch}: pass an --img "
                             "that --patch divides (64 with 8, 224 with 14)")


# What differs between the four worlds: the action size and the paper's number of subspaces.
PRESETS = {
    "twoRoom": dict(action_dim=2, subspaces=32),
    "pushT": dict(action_dim=2, subspaces=16),
    "reacher": dict(action_dim=2, subspaces=32),
    "cube": dict(action_dim=5, subspaces=32),
}

# A model for CPUs (1.2M parameters, ~0.2 s a step on 2 cores at batch 32): same architecture, half the
# width, fewer layers. M keeps the paper's directions per dimension (1024 for D=192, so 512 for D=96):
# fewer directions sample a wide space sparsely and handicap the global SIGReg most.
SMALL = dict(dim=96, enc_layers=4, enc_heads=3, enc_mlp=384, proj_hidden=512, act_hidden=192,
             pred_layers=3, pred_heads=4, pred_head_dim=32, pred_mlp=384, num_proj=512)

# Training recipes. train.py takes "paper" on a CUDA GPU and "cpu" elsewhere; explicit flags override.
# The paper's schedule is 10 epochs at lr 5e-5; 30k steps at 5e-4 is our shorter GPU schedule (run on a
# GPU for 300 steps only, not yet in full). The CPU recipe: about 9 min of training on a 2-core CPU with
# bf16 (README).
RECIPES = {
    "paper": dict(small=False, steps=30000, batch=128, lr=5e-4),
    "cpu": dict(small=True, steps=2500, batch=32, lr=1e-3),
}
# What a recipe changes for one world, chosen on held-out probes and predictions (README, "When planning
# fails"): with the official positions (std 0.02, small beside the patch embeddings) the CPU model's encoder
# never learns where things are in the cube world; drawn at std 1 it reads the gripper's x-y at R^2 0.96.
# pushT, the reacher and the cube train 6000 steps (about 22 min on a 2-core CPU with bf16), chosen on planning
# seed 1 (README, "The four worlds"). The reacher's small model takes K=4 and the cube's K=8: at K=32 (3
# dimensions a subspace) the reacher's encoder holds the first link alone, the cube's not the cube's height; with
# fewer, larger subspaces (24 and 12 dimensions) they hold them, and plan better.
WORLD_RECIPES = {
    ("cpu", "pushT"): dict(steps=6000),
    ("cpu", "reacher"): dict(steps=6000, subspaces=4),
    ("cpu", "cube"): dict(pos_std=1.0, steps=6000, subspaces=8),
}

# -----------------------------------------------------------------------------
# Transformer pieces, shared by the encoder and the predictor


class Attention(nn.Module):
    written_out = False   # set by `precision` on a CPU under bf16, where it is the faster (README)

    def __init__(self, dim, heads, head_dim, causal=False, bias=True, dropout=0.0):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=bias)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x, cache=None):
        """x (B, T, dim). cache (a rollout's): a list holding the keys and values of the frames before x,
        which a causal mask leaves unchanged; x then brings one new frame, and its own are added."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, h, T, hd)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = k, v
        causal = self.causal and T > 1  # one new frame sees every earlier one
        drop = self.dropout if self.training else 0.0
        if not Attention.written_out:   # fused kernel for softmax(q k^T / sqrt(hd) + causal mask) v,
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=causal)  # dropout on the weights
        else:                           # the same, written out; over a few frames compiled, as products
            few = torch.compiler.is_compiling() and k.shape[2] <= 4   # that the compiler fuses (README)
            q = q * q.shape[-1] ** -0.5
            s = (q[..., None, :] * k[..., None, :, :]).sum(-1) if few else q @ k.transpose(-1, -2)  # (B, h, T, T)
            if causal:
                s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            p = s.softmax(-1)
            p = F.dropout(p, drop) if drop else p
            y = (p[..., None] * v[..., None, :, :]).sum(-2) if few else p @ v                        # (B, h, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    """Pre-norm transformer block. Plain, it is the ViT's (HF's LayerNorm eps 1e-12). With `adaln` it is
    the LeWM predictor's: a condition c sets shift, scale and gate of both branches (AdaLN-zero, as in
    DiT; the gates start at zero so the block starts as the identity), each branch opens with its own
    LayerNorm after the modulation, its attention has no qkv bias, and dropout acts on the attention
    weights, inside the MLP and on both branch outputs."""

    def __init__(self, dim, heads, head_dim, mlp, causal=False, dropout=0.0, adaln=False):
        super().__init__()
        eps = 1e-6 if adaln else 1e-12
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=not adaln)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=not adaln)
        self.attn = Attention(dim, heads, head_dim, causal, bias=not adaln, dropout=dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, dim))
        self.drop = nn.Dropout(dropout)
        self.ada = None
        if adaln:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
            self.inner1, self.inner2 = nn.LayerNorm(dim), nn.LayerNorm(dim)   # after the modulation

    def forward(self, x, c=None, cache=None):
        if self.ada is None:
            x = x + self.drop(self.attn(self.norm1(x)))
            return x + self.drop(self.mlp(self.norm2(x)))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # 6 x (B, T, D)
        x = x + gate1 * self.drop(self.attn(self.inner1(self.norm1(x) * (1 + scale1) + shift1), cache))
        return x + gate2 * self.drop(self.mlp(self.inner2(self.norm2(x) * (1 + scale2) + shift2)))


def projector(dim, hidden):
    """Linear -> BatchNorm -> GELU -> Linear. Without it the ViT's final LayerNorm, which pins every
    embedding to a sphere, would fight the Gaussian regularizer."""
    return nn.Sequential(nn.Linear(dim, hidden), BatchNorm(hidden), nn.GELU(), nn.Linear(hidden, dim))


def world():
    """(rank, ranks): this process's place among torchrun's processes; (0, 1) in a plain run."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


class SumOverRanks(torch.autograd.Function):
    """x summed over torchrun's ranks. Every rank's loss sees the sum, so the gradient with respect to
    each rank's x is the sum of all ranks' gradients with respect to the sum: summed likewise."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g):
        return SumOverRanks.forward(ctx, g.contiguous())


class BatchNorm(nn.BatchNorm1d):
    """nn.BatchNorm1d. Under torchrun, training statistics are those of the whole batch across the ranks
    (each holding an equal share), with their gradient; nn.SyncBatchNorm does this on GPUs only."""

    def forward(self, x):
        ranks = world()[1]
        if not (self.training and ranks > 1):
            return super().forward(x)
        n = x.shape[0] * ranks
        x = x.float()
        mean = SumOverRanks.apply(x.sum(0)) / n
        xc = x - mean
        var = SumOverRanks.apply((xc * xc).sum(0)) / n     # two passes, as BatchNorm1d: exact when var << mean^2
        with torch.no_grad():                              # running statistics as BatchNorm1d keeps them
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
            self.running_mean.lerp_(mean, m)
            self.running_var.lerp_(var * n / (n - 1), m)
        return xc * torch.rsqrt(var + self.eps) * self.weight + self.bias

# -----------------------------------------------------------------------------
# ViT encoder


class Encoder(nn.Module):
    """ViT: patchify, add a CLS token and learned positions, transformer, LayerNorm; returns CLS."""

    def __init__(self, cfg):
        super().__init__()
        n = (cfg.img // cfg.patch) ** 2
        self.patchify = nn.Conv2d(3, cfg.dim, cfg.patch, stride=cfg.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, cfg.dim))
        self.pos_std = cfg.pos_std
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.enc_heads, cfg.dim // cfg.enc_heads, cfg.enc_mlp)
                                    for _ in range(cfg.enc_layers))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-12)

    def forward(self, x):                                  # (B, 3, H, W), ImageNet-normalised
        x = self.patchify(x).flatten(2).transpose(1, 2)    # (B, N, D)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos  # (B, N+1, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 0])                          # (B, D)

# -----------------------------------------------------------------------------
# Action encoder and the AdaLN-zero predictor


class Predictor(nn.Module):
    """Causal transformer over the embeddings of the last `history` frames; frame token t is modulated
    by action block t and is read out as the prediction of frame t+1."""

    def __init__(self, cfg):
        super().__init__()
        D = cfg.dim
        self.action_encoder = nn.Sequential(
            nn.Linear(cfg.frameskip * cfg.action_dim, cfg.act_embed), nn.Linear(cfg.act_embed, cfg.act_hidden),
            nn.SiLU(), nn.Linear(cfg.act_hidden, D))
        self.pos = nn.Parameter(torch.zeros(1, cfg.history, D))
        self.blocks = nn.ModuleList(
            Block(D, cfg.pred_heads, cfg.pred_head_dim, cfg.pred_mlp, causal=True, dropout=cfg.dropout, adaln=True)
            for _ in range(cfg.pred_layers))
        self.norm = nn.LayerNorm(D)

    def forward(self, z, a, cache=None):  # z (B, T, D), a (B, T, F*A) with T <= history
        """cache (a rollout's): one list per block (`Attention`); z and a then hold the frames after those
        cached, which start at position `start`."""
        start = cache[0][0].shape[2] if cache and cache[0] else 0
        c = self.action_encoder(a)         # (B, T, D)
        x = z + self.pos[:, start:start + z.shape[1]]
        for i, block in enumerate(self.blocks):
            x = block(x, c, cache and cache[i])
        return self.norm(x)                # (B, T, D)

# -----------------------------------------------------------------------------
# The Gaussian regularizers: SIGReg (LeWM) and subspace SIGReg (Sub-JEPA)


def epps_pulley_reference(h, t, w, phi):
    """Epps-Pulley statistic of each column of h (..., B, M) against N(0, 1), returns (..., M):

        B * sum_k w_k |phi_B(t_k) - phi(t_k)|^2,   phi_B(t) = mean_b exp(i t h_b),   phi(t) = exp(-t^2/2)

    the weighted squared distance between the empirical and the Gaussian characteristic functions,
    integrated on [-3, 3] by the trapezoid rule (weights w). Plain and clear, but memory-hungry."""
    x = h[..., None] * t                                   # (..., B, M, knots)
    err = (torch.cos(x).mean(-3) - phi) ** 2 + torch.sin(x).mean(-3) ** 2
    return h.shape[-2] * (err @ w)


class EppsPulley(torch.autograd.Function):
    """Epps-Pulley statistic of each column of h, as `epps_pulley_reference` but memory-safe and fast.
    The plain version holds a (..., B, M, knots) tensor and autograd keeps several more of them: at
    K=32 subspaces, B=128, T=4, M=1024 each is ~285M floats. Here the knots are equally spaced from 0
    (t_k = k dt; knot 0 adds exactly nothing), so exp(i t_k h) = e^k with e = exp(i dt h): one complex
    exponential, then one complex multiply per knot instead of a cosine and a sine. We walk h in chunks
    small enough to stay in the CPU's cache (chunks never split the batch dim B, so the statistic is
    exact), keep only the means C_k + i S_k = mean_b e_b^k, and write the gradient by hand as a
    polynomial in e, evaluated by Horner's rule:
        d/dh_b = Re(sum_k c_k e_b^k),   c_k = 2 w_k t_k (S_k + i (C_k - phi_k)).
    Nothing larger than a chunk of h is ever stored.

    Under torchrun each rank holds an equal share of the batch, and the statistic is the whole batch's:
    the means are summed over the ranks before the squared error, and the backward sums the upstream
    gradients g (..., M) over the ranks, so each rank gets the gradient of every rank's loss with respect
    to its own samples (as an autograd all_reduce would; DistributedDataParallel then averages). The
    extra memory is that of the means: the backward stays memory-safe.

    With fused="inductor" (a torch.compile backend) the two passes are written in real arithmetic
    (`powers`, `series`) and compiled: the compiler fuses each into one sweep over h that stores nothing
    per knot (at K=32 on the CPU model, 2-3x faster than the eager complex passes: README)."""
    CHUNK = {"cpu": 2**18}       # elements of h per chunk: ~2 MiB of complex temporaries fit a CPU's L2
    seconds = 0.0                # spent summing over ranks (train.py --bench prints it)

    @staticmethod
    def sum_over_ranks(x):       # in place: every rank's x becomes the sum of all ranks' x
        synchronize(x.device)    # (so that the clock counts the collective alone)
        t0 = time.perf_counter()
        dist.all_reduce(x)
        synchronize(x.device)
        EppsPulley.seconds += time.perf_counter() - t0
        return x

    @staticmethod
    def chunks(h):               # h (..., B, M) -> its rows (L, B, M) and slices of L
        B, M = h.shape[-2:]
        rows = h.reshape(-1, B, M)
        n = max(1, EppsPulley.CHUNK.get(h.device.type, 2**26) // (B * M))
        return rows, [slice(i, i + n) for i in range(0, len(rows), n)]

    @staticmethod
    def cis(x, n):               # [(cos kx, sin kx) for k = 1..n], each the product of at most four of
        pows = [(x.cos(), x.sin())]   # e^1, e^2, e^4, e^8 (the bits of k): no chain of 16 products for the
        while 2 ** len(pows) <= n:    # compiler to inline into itself (it would take minutes to build)
            c, s = pows[-1]
            pows.append((c * c - s * s, 2 * c * s))
        out = []
        for k in range(1, n + 1):
            bits = [p for j, p in enumerate(pows) if k >> j & 1]
            c, s = bits[0]
            for c2, s2 in bits[1:]:
                c, s = c * c2 - s * s2, c * s2 + s * c2
            out.append((c, s))
        return out

    @staticmethod
    def powers(h, dt, n):        # h (L, B, M) -> mean_b cos(k dt h_b), mean_b sin(k dt h_b), k = 1..n: (2, n, L, M)
        e = EppsPulley.cis(dt * h, n)
        return torch.stack([torch.stack([c.mean(1) for c, _ in e]), torch.stack([s.mean(1) for _, s in e])])

    @staticmethod
    def series(h, dt, a, b):     # h (L, B, M), a, b (n, L, 1, M) -> sum_k a_k cos(k dt h) + b_k sin(k dt h), by Horner
        x = dt * h
        c, s = x.cos(), x.sin()
        ar, ai = a[-1], -b[-1]   # acc = sum_k (a_k - i b_k) e^(k-1), from the top: acc <- (a_k - i b_k) + acc e
        for k in range(len(a) - 2, -1, -1):
            ar, ai = a[k] + ar * c - ai * s, -b[k] + ar * s + ai * c
        return ar * c - ai * s   # Re(acc e)

    compiled = {}                # the two above, compiled, by (name, backend)

    @staticmethod
    def kernel(name, backend):
        if (name, backend) not in EppsPulley.compiled:
            options = {"cpp.max_horizontal_fusion_size": 64} if backend == "inductor" else None   # all 2 n means in
            EppsPulley.compiled[name, backend] = torch.compile(getattr(EppsPulley, name), backend=backend,  # one sweep
                                                               dynamic=False, options=options)
        return EppsPulley.compiled[name, backend]

    @staticmethod
    def forward(ctx, h, t, w, phi, fused=None):
        rows, parts = EppsPulley.chunks(h)
        n, dt = len(t) - 1, t[1]
        if fused:
            CS = EppsPulley.kernel("powers", fused)(rows, dt, n)                # (2, n, L, M)
        else:
            CS = torch.empty(2, n, *rows.shape[::2], dtype=h.dtype, device=h.device)
            for s in parts:
                e = torch.polar(torch.ones_like(rows[s]), dt * rows[s])           # exp(i dt h), (l, B, M)
                p = e
                for k in range(n):
                    m = p.mean(1)                                                # mean_b exp(i t_k h_b)
                    CS[0, k, s], CS[1, k, s] = m.real, m.imag
                    p = p * e
        ranks = world()[1]
        if ranks > 1:                                                   # the whole batch's means
            CS = EppsPulley.sum_over_ranks(CS) / ranks
        ctx.save_for_backward(h, t, w, phi, CS)
        ctx.fused = fused
        wk, phik = w[1:, None, None], phi[1:, None, None]
        stat = ranks * h.shape[-2] * (((CS[0] - phik) ** 2 + CS[1] ** 2) * wk).sum(0)   # (L, M)
        return stat.view(*h.shape[:-2], h.shape[-1])

    @staticmethod
    def backward(ctx, g):        # g (..., M)
        h, t, w, phi, (C, S) = ctx.saved_tensors
        if world()[1] > 1:
            g = EppsPulley.sum_over_ranks(g.contiguous().clone())
        coef = 2 * (w * t)[1:, None] * g.reshape(-1, 1, g.shape[-1])             # (L, n, M): each row's knots
        a = (coef * S.transpose(0, 1)).transpose(0, 1)                            # side by side in memory, viewed
        b = (coef * (phi[1:, None] - C.transpose(0, 1))).transpose(0, 1)          # as (n, L, M); c_k = a_k - i b_k
        rows, parts = EppsPulley.chunks(h)
        dt = t[1]
        if ctx.fused:
            grad = EppsPulley.kernel("series", ctx.fused)(rows, dt, a[:, :, None], b[:, :, None])
            return grad.view(h.shape), None, None, None, None
        c = torch.complex(a, -b)[:, :, None]                                      # (n, L, 1, M)
        grad = torch.empty_like(rows)
        for s in parts:
            e = torch.polar(torch.ones_like(rows[s]), dt * rows[s])
            acc = c[-1, s]
            for k in range(len(c) - 2, -1, -1):                        # Horner
                acc = torch.addcmul(c[k, s], acc, e)
            grad[s] = (acc * e).real
        return grad.view(h.shape), None, None, None, None


class SIGReg(nn.Module):
    """Sketched isotropic Gaussian regularizer: the Epps-Pulley test on M random 1-D projections of z,
    fresh every step. z is (T, B, D): each time index is its own sample of B embeddings."""

    def __init__(self, num_proj=1024, knots=17):
        super().__init__()
        self.num_proj = num_proj
        t = torch.linspace(0, 3, knots)
        dt = 3 / (knots - 1)
        trapezoid = torch.full((knots,), 2 * dt)  # 2*dt: the integral over [-3, 3] is twice that over [0, 3]
        trapezoid[[0, -1]] = dt
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("phi", torch.exp(-t ** 2 / 2), persistent=False)
        self.register_buffer("w", trapezoid * torch.exp(-t ** 2 / 2), persistent=False)
        self.seed = None   # None: directions from torch's global RNG; an int: from a generator seeded with it
        #                    (train.py seeds it with the step: every rank of torchrun draws the same directions)
        self.fused = None  # a torch.compile backend: the statistic's compiled kernels (JEPA.compiled_loss on a CPU)

    def null(self):
        """The statistic's mean for truly Gaussian embeddings, at any batch size: sum_k w_k (1 - phi_k^2) = 1.05
        (each knot's squared error has mean (1 - phi^2) / B, and the statistic is scaled by B). A training reg at
        or below it means the batch can no longer tell the embedding from a Gaussian: the regularizer has
        stopped pushing, however little of the world the embedding holds."""
        return float((self.w * (1 - self.phi ** 2)).sum())

    def directions(self, dim, device, lead=()):
        g = None if self.seed is None else torch.Generator(device).manual_seed(self.seed)
        A = torch.randn(*lead, dim, self.num_proj, device=device, generator=g)
        return A * A.square().sum(-2, keepdim=True).rsqrt()   # (..., dim, M) unit columns

    def project(self, z):                                  # (T, B, D) -> (T, B, M)
        return z @ self.directions(z.shape[-1], z.device)

    def forward(self, z):
        # the statistic takes 17 cosines of t*h with t up to 3: bf16's 8 bits are not enough
        with torch.autocast(z.device.type, enabled=False):
            h = self.project(z.float())
            return EppsPulley.apply(h, self.t, self.w, self.phi, self.fused).mean()


class SubspaceSIGReg(SIGReg):
    """Sub-JEPA: the same test, inside K frozen random d-dimensional subspaces (d = D/K). Each row
    block P_k is an orthonormal basis drawn once from `seed` and never trained or redrawn; the M
    directions are drawn inside each subspace every step. K=1 is a random rotation of global SIGReg."""

    def __init__(self, dim, subspaces, num_proj=1024, knots=17, seed=0):
        super().__init__(num_proj, knots)
        if subspaces < 1 or dim % subspaces:
            raise InputError(f"--subspaces {subspaces} does not divide the embedding width {dim}: "
                             f"use one of {[k for k in range(1, dim + 1) if dim % k == 0]} (or 0 for global SIGReg)")
        g = torch.Generator().manual_seed(seed)
        G = torch.randn(subspaces, dim, dim // subspaces, generator=g, dtype=torch.float64)
        self.register_buffer("P", torch.linalg.qr(G).Q.transpose(1, 2).float())  # (K, d, D) orthonormal rows

    def project(self, z):                                  # (T, B, D) -> (K, T, B, M)
        K, d, _ = self.P.shape
        zk = torch.einsum("kjd,tbd->ktbj", self.P, z)       # (K, T, B, d) coordinates in each subspace
        return zk @ self.directions(d, z.device, (K, 1)) # (K, 1, d, M) broadcasts over T

# -----------------------------------------------------------------------------
# The world model


class JEPA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.projector = projector(cfg.dim, cfg.proj_hidden)
        self.predictor = Predictor(cfg)
        self.pred_proj = projector(cfg.dim, cfg.proj_hidden)
        self.reg = (SIGReg(cfg.num_proj, cfg.knots) if cfg.subspaces == 0 else
                    SubspaceSIGReg(cfg.dim, cfg.subspaces, cfg.num_proj, cfg.knots, cfg.reg_seed))
        # pixels are normalised with ImageNet's mean and std, as the official code does
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1), persistent=False)
        self.apply(self._init_weights)
        for block in self.predictor.blocks:   # AdaLN-zero: the modulation starts at 0, so gates are 0
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)

    @staticmethod
    def _init_weights(m):
        # ViT-style: small truncated-normal weights, zero biases; the encoder's positions and CLS likewise
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, Encoder):
            nn.init.trunc_normal_(m.pos, std=m.pos_std)
            nn.init.trunc_normal_(m.cls, std=0.02)
        elif isinstance(m, Predictor):       # the official predictor's positions start at std 1
            nn.init.normal_(m.pos)

    def param_counts(self):
        """Parameters per part, in the paper's terms."""
        n = lambda m: sum(p.numel() for p in m.parameters())
        act = n(self.predictor.action_encoder)
        return {"encoder": n(self.encoder), "predictor": n(self.predictor) - act, "action encoder": act,
                "projectors": n(self.projector) + n(self.pred_proj), "total": n(self)}

    def encode(self, frames):              # (B, T, 3, H, W) uint8 or float in [0, 1]
        B, T = frames.shape[:2]
        x = frames.flatten(0, 1)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        z = self.projector(self.encoder((x - self.mean) / self.std))   # (B*T, D)
        return z.view(B, T, -1)                            # (B, T, D)

    def predict(self, z, a):               # z (B, T, D), a (B, T, F*A) -> prediction of frames 1..T
        B, T, D = z.shape
        return self.pred_proj(self.predictor(z, a).flatten(0, 1)).view(B, T, D)

    def rollout(self, z, actions, cached=True):
        """Autoregressive prediction feeding its own outputs back. z (B, T0, D) are known embeddings,
        actions (B, T, F*A) with T >= T0 hold the block taken after each frame; returns (B, T+1, D):
        the T0 given embeddings followed by T+1-T0 predicted ones. Until the history is full, the frames
        keep their positions and a causal predictor's keys and values of the earlier ones do not change:
        they are cached (`Attention`), and each step adds only the newest frame (README). cached=False
        recomputes them, as the official code does."""
        cache, start = [[] for _ in self.predictor.blocks], 0
        for t in range(z.shape[1], actions.shape[1] + 1):
            if t > self.cfg.history or not cached:   # beyond the history the window slides: every frame moves
                cache, start = None, max(t - self.cfg.history, 0)
            h = self.predictor(z[:, start:], actions[:, start:t], cache)[:, -1]  # (B, D): only the newest is
            z = torch.cat([z, self.pred_proj(h)[:, None]], 1)                     # needed, so only it goes through pred_proj
            start = t                                # with the cache, the next step brings the newest frame only
        return z

    def loss(self, frames, actions):
        """frames (B, T, 3, H, W), actions (B, >=T-1, F*A) z-scored -> (total, prediction, regularizer).
        No stop-gradient and no target network: the encoder learns through both sides."""
        z = self.encode(frames)                            # (B, T, D)
        z_hat = self.predict(z[:, :-1], actions[:, :z.shape[1] - 1])  # (B, T-1, D)
        pred = F.mse_loss(z_hat.float(), z[:, 1:].float())
        reg = self.reg(z.transpose(0, 1))                  # (T, B, D): one test per time index
        return pred + self.cfg.lam * reg, pred, reg

    def forward(self, frames, actions):   # the loss: DistributedDataParallel calls the model
        return self.loss(frames, actions)

    def compiled_loss(self, net=None, whole=True, **compile_kwargs):
        """The loss (of `net`, a wrapper such as DistributedDataParallel, or of the model) under torch.compile.
        The regularizer stays outside the graph (its autograd Function sums over ranks); on a CPU its two
        passes over h are compiled on their own, in real arithmetic (`EppsPulley.powers`, `series`): faster
        than the eager complex ones at K=32 (README). Not on CUDA: not measured there yet. whole=False
        compiles those two alone and leaves the rest eager: a CPU without native bf16, where compiling the
        model does not pay and compiling the regularizer does (README). (The compiler is imported here, not
        with this file: it costs a second.)"""
        self.reg.fused = compile_kwargs.get("backend", "inductor") if self.mean.device.type == "cpu" else None
        if not whole:
            return net or self
        self.reg.forward = torch.compiler.disable(self.reg.forward)
        return torch.compile(net or self, **compile_kwargs)

    @torch.no_grad()
    def calibrate(self, batches):
        """Set the BatchNorm running statistics to their exact averages over `batches` of (frames,
        actions) at the current weights. Frames differ little (a 2-pixel agent), so the features
        entering BatchNorm vary little too; a running mean that lags the weights by a few of their
        tiny standard deviations would shift every embedding at evaluation. Leaves the model in eval mode."""
        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm1d)]
        self.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None       # a cumulative average over the batches below
            m.train()
        for frames, actions in batches:
            z = self.encode(frames)
            self.predict(z[:, :-1], actions[:, :z.shape[1] - 1])
        for m in norms:
            m.momentum = 0.1
            m.eval()

    @torch.no_grad()
    def plan(self, obs, goal, horizon=5, generator=None, **cem_kwargs):
        """CEM over `horizon` action blocks for E problems at once: obs, goal frames (E, 3, H, W) ->
        z-scored action blocks (E, horizon, F*A) minimising |z_H - z_goal|^2 after the rollout."""
        z0 = self.encode(obs[:, None])                     # (E, 1, D)
        zg = self.encode(goal[:, None])                    # (E, 1, D)
        shape = (len(obs), horizon, self.cfg.frameskip * self.cfg.action_dim)
        return cem(lambda a: self.cost(z0, zg, a), shape, generator=generator, device=obs.device, **cem_kwargs)

    ROWS = {"cpu": 2048}   # candidates rolled out at once, by device: on a CPU, groups that stay in its caches

    def cost(self, z0, zg, plans):
        """The planning cost of plans (E, S, H, F*A) from z0 to zg (E, 1, D): the squared distance of the last
        predicted embedding to the goal's -> (E, S). On a CPU the episodes go in equal groups of at most ROWS
        candidates (one shape for a compiled rollout): rows are independent, and the small model's activations
        then stay in the caches, where all at once they would not (1.2-1.4x on an AVX2 CPU; the same costs: README)."""
        E, S = plans.shape[:2]
        limit = self.ROWS.get(z0.device.type, E * S)
        n = max(d for d in range(1, E + 1) if E % d == 0 and (d * S <= limit or d == 1))   # episodes a group
        out = []
        for i in range(0, E, n):
            z = self.rollout(z0[i:i + n].repeat_interleave(S, 0), plans[i:i + n].flatten(0, 1))[:, -1]  # (n*S, D)
            out.append((z.view(n, S, -1) - zg[i:i + n]).float().pow(2).sum(-1))
        return torch.cat(out)

# -----------------------------------------------------------------------------
# FLOP counts (matrix multiplies only, 2 per multiply-add), for the benchmarks' utilisation figures


def encoder_flops(cfg):
    """One frame through the encoder and the projector."""
    n, D = (cfg.img // cfg.patch) ** 2 + 1, cfg.dim            # tokens, width
    layer = 2 * n * (4 * D * D + 2 * D * cfg.enc_mlp) + 4 * n * n * D   # qkv + out, MLP; q k^T and att v
    return 2 * (n - 1) * 3 * cfg.patch ** 2 * D + cfg.enc_layers * layer + 4 * D * cfg.proj_hidden


def predictor_flops(cfg, T):
    """One call of `predict` on T frames: action encoder, blocks with AdaLN, pred_proj."""
    D, inner = cfg.dim, cfg.pred_heads * cfg.pred_head_dim
    act = 2 * T * (cfg.frameskip * cfg.action_dim * cfg.act_embed + cfg.act_embed * cfg.act_hidden + cfg.act_hidden * D)
    layer = 2 * T * (4 * D * inner + 2 * D * cfg.pred_mlp + 6 * D * D) + 4 * T * T * inner
    return act + cfg.pred_layers * layer + T * 4 * D * cfg.proj_hidden


def train_flops(cfg, batch, frames=4):
    """One training step on `batch` clips: forward + backward = 3x the forward."""
    return 3 * batch * (frames * encoder_flops(cfg) + predictor_flops(cfg, frames - 1))


def plan_flops(cfg, samples=300, iters=30, horizon=5):
    """One CEM solve: every candidate is rolled out over `horizon` blocks, with a history of <= 3 frames
    (pred_proj runs on the newest frame only)."""
    proj = 4 * cfg.dim * cfg.proj_hidden
    per_rollout = sum(predictor_flops(cfg, T) - (T - 1) * proj for T in (min(t, cfg.history) for t in range(1, horizon + 1)))
    return samples * iters * per_rollout


# -----------------------------------------------------------------------------
# Cross-entropy method


@torch.no_grad()
def cem(cost, shape, samples=300, elites=30, iters=30, generator=None, device=None, progress=None, rows=None):
    """Minimise cost over plans for E problems together. shape = (E, *plan_shape); cost maps
    candidates (E, S, *plan_shape) to (E, S). Sample around a Gaussian, refit it to the best
    `elites`, repeat; return the final mean (E, *plan_shape). Sample 0 is always the current mean.
    `progress` (a tqdm bar, say) is updated once per iteration. rows = (first, total): the E problems are
    rows first.. of `total` (a rank's share under torchrun): the noise of all `total` is drawn and these
    rows kept, so that each problem is planned as it is in one process."""
    device = device or (generator.device if generator is not None else "cpu")
    E, *plan_shape = shape
    first, total = rows or (0, E)
    mean = torch.zeros(E, math.prod(plan_shape), device=device)   # (E, P)
    std = torch.ones_like(mean)
    for _ in range(iters):
        noise = torch.randn(total, samples, mean.shape[1], device=device, generator=generator)[first:first + E]
        x = mean[:, None] + std[:, None] * noise
        x[:, 0] = mean                                               # (E, S, P)
        c = cost(x.view(E, samples, *plan_shape))                    # (E, S)
        best = c.topk(elites, dim=1, largest=False).indices          # (E, elites)
        elite = x.gather(1, best[..., None].expand(-1, -1, x.shape[2]))
        mean, std = elite.mean(1), elite.std(1)
        if progress is not None:
            progress.update()
    return mean.view(shape)

# =============================================================================
# The environments and their data: twoRoom, pushT, reacher, cube with gymnasium's API, MuJoCo physics
# where there is physics, one small numpy renderer (top-down, anti-aliased, no OpenGL), scripted data
# policies in the papers' spirit, and an atomic, memory-mapped dataset format.
#
#     env = make_env("pushT")                  # observations are (img, img, 3) uint8 RGB frames
#     obs, _ = env.reset(options={"state": s, "goal": g})   # start from a dataset state, know the goal
#     obs, r, terminated, truncated, info = env.step(a)     # info["success"]: the papers' success test
#     collect("pushT", "data/pushT", episodes=1000, steps=100); ds = load_dataset("data/pushT")
# =============================================================================

# -----------------------------------------------------------------------------
# a tiny top-down rasteriser: anti-aliased filled circles and rotated boxes on uint8 frames

class Canvas:
    """Maps the world square [x0, x0+size] x [y0, y0+size] onto img x img pixels and draws on frames."""

    def __init__(self, img, x0, y0, size, y_down=True):
        self.img, self.x0, self.y0, self.size, self.y_down = img, x0, y0, size, y_down
        self.px = size / img  # world units per pixel
        c = (np.arange(img, dtype=np.float32) + 0.5) * self.px  # pixel centres, from the top-left
        self.xs = x0 + c
        self.ys = (y0 + c if y_down else y0 + size - c)[:, None]  # a column, to broadcast against xs

    def _span(self, t, r):
        # pixel index range covering [t - r, t + r], t measured from the image's top/left edge
        return max(int((t - r) / self.px), 0), min(int((t + r) / self.px) + 1, self.img)

    def _window(self, x, y, r):
        r0, r1 = self._span((y - self.y0) if self.y_down else (self.y0 + self.size - y), r)
        c0, c1 = self._span(x - self.x0, r)
        return r0, r1, c0, c1

    def _blend(self, out, win, cover, color, alpha):
        r0, r1, c0, c1 = win
        reg = out[r0:r1, c0:c1]
        a = cover[..., None] if alpha == 1.0 else cover[..., None] * np.float32(alpha)
        reg[...] = reg + a * (color - reg)  # coverage 1 gives exactly `color`

    def circle(self, out, x, y, r, color, alpha=1.0):
        """Filled circle of radius r centred at world (x, y)."""
        win = r0, r1, c0, c1 = self._window(x, y, r + self.px)
        if r0 >= r1 or c0 >= c1:
            return
        dx, dy = self.xs[c0:c1] - x, self.ys[r0:r1] - y
        cover = np.clip((r - np.sqrt(dx * dx + dy * dy)) / self.px + 0.5, 0, 1)  # signed distance -> coverage
        self._blend(out, win, cover, color, alpha)

    def box(self, out, x, y, hx, hy, angle, color, alpha=1.0):
        """Filled rectangle of half-sizes (hx, hy) centred at (x, y), rotated by angle (radians)."""
        win = r0, r1, c0, c1 = self._window(x, y, math.hypot(hx, hy) + self.px)
        if r0 >= r1 or c0 >= c1:
            return
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = self.xs[c0:c1] - x, self.ys[r0:r1] - y
        u = np.abs(dx * c + dy * s) - hx  # box frame coordinates, minus half-sizes
        v = np.abs(dy * c - dx * s) - hy
        cover = np.clip(0.5 - np.maximum(u, v) / self.px, 0, 1)
        self._blend(out, win, cover, color, alpha)

    def blank(self, color):
        return np.broadcast_to(np.asarray(color, np.uint8), (self.img, self.img, 3)).copy()


def rgb(*c):
    return np.array(c, np.float32)


def wrap(a):
    """Angles wrapped to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi

# -----------------------------------------------------------------------------
# environments: gymnasium API, image observations, exact get_state / set_state

class _Env(gym.Env):
    """Shared plumbing. reward = info["success"] = the success test against options["goal"] when one
    was given to reset (else 0 / False); never terminated or truncated: the caller picks the length."""
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    version = 1   # of the world (what it draws, how it moves): data and models of another version are refused

    def __init__(self, img, act_dim):
        self.img, self.render_mode, self.goal = img, "rgb_array", None
        self.observation_space = gym.spaces.Box(0, 255, (img, img, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        """Random start (seeded), or options={"state": s} to start exactly at s; options["goal"] sets the goal."""
        super().reset(seed=seed)
        options = options or {}
        if options.get("state") is not None:
            self.set_state(options["state"])
        else:
            self._randomize(self.np_random)
        self.goal = options.get("goal")
        return self.render(), {}

    def step(self, action):
        action = np.asarray(action, np.float64)
        if action.shape != self.action_space.shape:
            raise InputError(f"action has shape {action.shape}, {self.name} takes {self.action_space.shape}")
        self._step(np.clip(action, -1.0, 1.0))  # planners may overshoot: clip
        ok = self.goal is not None and bool(self.is_success(self.get_state(), self.goal))
        return self.render(), float(ok), False, False, {"success": ok}

    def is_success(self, state, goal):
        """The papers' success test. Each world's `distance` is in units of its tolerance: success is < 1."""
        return self.distance(state, goal) < 1.0

    def play(self, state, actions):
        """The state after taking `actions` (L, A) from `state`, without rendering. Leaves the environment's
        own state untouched."""
        keep = self.get_state()
        self.set_state(state)
        for a in actions:
            self._step(np.clip(np.asarray(a, np.float64), -1.0, 1.0))
        end = self.get_state()
        self.set_state(keep)
        return end

    def simulate(self, state, actions):
        """Distance to the goal after taking `actions` from `state`: the oracle's cost (CEM on the true simulator)."""
        return self.distance(self.play(state, actions), self.goal)

    def at_rest(self, state):
        """The state as far as one frame shows it: where things are, not how they move. Without physics
        a frame shows the whole state."""
        return np.array(state, np.float64)

    def render_state(self, state):
        """Image of any state (e.g. a goal), leaving the environment's own state untouched."""
        keep = self.get_state()
        self.set_state(state)
        frame = self.render()
        self.set_state(keep)
        return frame


class TwoRoom(_Env):
    """Point agent in two rooms joined by one door; plain kinematics, no physics engine.
    state = [x, y] of the agent's centre, arena units (224 x 224, y pointing down the image).
    The wall and the door are the reference world's: the centre passes the wall where it is within 15.75 of the
    door's middle (its half-extent 14 plus a margin of 1.75, so the disc may overlap the drawn frame); a move that
    would enter the wall elsewhere stops half a unit short of it in x, and y goes on (version 2; README)."""
    name = "twoRoom"
    version = 2   # version 1 let the centre through within 7 of the door's middle only, and stopped y at its jambs
    SIZE, BORDER, WALL_X, WALL_HALF, DOOR_Y, DOOR_HALF, R, SPEED = 224.0, 14.0, 112.0, 5.0, 49.0, 14.0, 7.0, 5.0
    DOOR_PASS = DOOR_HALF + 1.75            # how far from the door's middle the centre may pass
    LO, HI = BORDER + R, SIZE - BORDER - R  # where the centre may go

    def __init__(self, img=64):
        super().__init__(img, 2)
        self.canvas = cv = Canvas(img, 0.0, 0.0, self.SIZE)
        self.bg = cv.blank((40, 45, 60))  # the border
        cv.box(self.bg, 112, 112, 112 - self.BORDER, 112 - self.BORDER, 0.0, rgb(235, 235, 225))
        door0, door1 = self.DOOR_Y - self.DOOR_HALF, self.DOOR_Y + self.DOOR_HALF
        for y0, y1 in ((self.BORDER, door0), (door1, self.SIZE - self.BORDER)):  # the wall, less the door
            cv.box(self.bg, self.WALL_X, (y0 + y1) / 2, self.WALL_HALF, (y1 - y0) / 2, 0.0, rgb(40, 45, 60))
        self.pos = np.full(2, 56.0)

    def _in_wall(self, x):   # the disc would touch the wall's band
        return abs(x - self.WALL_X) < self.WALL_HALF + self.R

    def _randomize(self, rng):
        while True:   # in a room, not in the doorway (the reference's starts)
            x, y = rng.uniform(self.LO, self.HI, 2)
            if not self._in_wall(x):
                break
        self.pos = np.array([x, y])

    def _step(self, a):
        # a move (<= 5 units) is shorter than the wall's band (24), so it cannot tunnel through it
        x, y = float(self.pos[0]), float(self.pos[1])
        nx = min(max(x + self.SPEED * a[0], self.LO), self.HI)
        ny = min(max(y + self.SPEED * a[1], self.LO), self.HI)
        if self._in_wall(nx) and abs(ny - self.DOOR_Y) > self.DOOR_PASS:   # into the wall, away from the door
            nx = self.WALL_X + math.copysign(self.WALL_HALF + self.R + 0.5, x - self.WALL_X)   # back on x's side
        self.pos = np.array([nx, ny])

    def get_state(self):
        return self.pos.copy()

    def set_state(self, state):
        self.pos = np.array(state, np.float64).reshape(2)

    def distance(self, state, goal):
        """Success: the agent within 16 units of the goal position."""
        return float(np.hypot(*(np.asarray(state)[:2] - np.asarray(goal)[:2]))) / 16.0

    def observables(self, states):   # (N, S) -> names, (N, P): what the frames show, for a linear probe
        return ["agent x", "agent y"], states[:, :2]
    parts = {"agent": [0, 1]}        # the state's parts, as columns of observables: which one a cost follows

    def render(self):
        out = self.bg.copy()
        self.canvas.circle(out, self.pos[0], self.pos[1], self.R, rgb(220, 50, 50))
        return out


class _MujocoEnv(_Env):
    """MuJoCo plumbing. state = [qpos, qvel, ctrl]; warm-starting is disabled so that these alone
    determine the future bitwise (the solver would otherwise start from the last step's answer)."""

    def __init__(self, xml, img, act_dim, substeps):
        super().__init__(img, act_dim)
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_WARMSTART
        self.data = mujoco.MjData(self.model)
        self.substeps = substeps
        self.nq, self.nv, self.nu = self.model.nq, self.model.nv, self.model.nu

    def get_state(self):
        d = self.data
        return np.concatenate([d.qpos, d.qvel, d.ctrl])

    def set_state(self, state):
        state, size = np.asarray(state, np.float64), self.nq + self.nv + self.nu
        if state.shape != (size,):
            raise InputError(f"state has shape {state.shape}, {self.name} needs ({size},)")
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)  # nothing from the past survives
        d.qpos[:], d.qvel[:], d.ctrl[:] = np.split(state, [self.nq, self.nq + self.nv])
        mujoco.mj_forward(m, d)

    def _physics(self):
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)

    def at_rest(self, state):
        """The state with what a frame does not show set to rest: velocities 0, and each motor's command
        0 (torques) or its joint's position (position servos: they hold still where they are)."""
        state, m = np.array(state, np.float64), self.model
        qpos, qvel, ctrl = np.split(state, [self.nq, self.nq + self.nv])   # views into state
        qvel[:] = 0.0
        for i in range(self.nu):
            servo = m.actuator_biastype[i] == mujoco.mjtBias.mjBIAS_AFFINE
            ctrl[i] = qpos[m.jnt_qposadr[m.actuator_trnid[i, 0]]] if servo else 0.0
        return state


# T block of Push-T: bar 120 x 30 on top of a stem 30 x 90; body origin at the T's centroid
T_COM = (120 * 30 * 15 + 30 * 90 * 75) / (120 * 30 + 30 * 90)  # centroid depth below the bar's top edge
T_BOXES = ((0.0, 15 - T_COM, 60.0, 15.0), (0.0, 75 - T_COM, 15.0, 45.0))  # (x, y, half x, half y) per box
PUSHT_XML = f"""
<mujoco model="pushT">
  <option timestep="0.01" gravity="0 0 0" integrator="implicitfast"/>
  <worldbody>
    <geom type="box" pos="-10 256 0" size="10 276 20"/> <geom type="box" pos="522 256 0" size="10 276 20"/>
    <geom type="box" pos="256 -10 0" size="276 10 20"/> <geom type="box" pos="256 522 0" size="276 10 20"/>
    <body name="agent">
      <joint name="ax" type="slide" axis="1 0 0"/> <joint name="ay" type="slide" axis="0 1 0"/>
      <geom type="sphere" size="15" mass="10"/>
    </body>
    <body name="block">
      <joint type="slide" axis="1 0 0" damping="50"/> <joint type="slide" axis="0 1 0" damping="50"/>
      <joint type="hinge" axis="0 0 1"/>
      <geom type="box" pos="{T_BOXES[0][0]} {T_BOXES[0][1]} 0" size="60 15 15" mass="{3600 / 6300}"/>
      <geom type="box" pos="{T_BOXES[1][0]} {T_BOXES[1][1]} 0" size="15 45 15" mass="{2700 / 6300}"/>
    </body>
  </worldbody>
  <actuator>
    <position joint="ax" kp="1000" kv="200"/> <position joint="ay" kp="1000" kv="200"/>
  </actuator>
</mujoco>"""


class PushT(_MujocoEnv):
    """Round agent (radius 15) pushing a T block in a 512-unit arena; no gravity, the block is damped
    hard so it stops when not pushed. Actions move the PD target: ctrl = agent position + 100 * a.
    state = qpos [agent x, agent y, block x, block y, block angle] + qvel (5) + ctrl (2), arena units."""
    name = "pushT"
    R, ARENA = 15.0, 512.0
    version = 2   # the stem in another colour than the bar; in one colour (version 1) the encoder missed the angle

    def __init__(self, img=64):
        super().__init__(PUSHT_XML, img, 2, substeps=10)
        m = self.model  # rotational damping matched to the linear one: the same 0.02 s decay time
        m.dof_damping[4] = 50.0 * m.body_inertia[m.body("block").id][2] / m.body_mass[m.body("block").id]
        self.canvas = cv = Canvas(img, 0.0, 0.0, self.ARENA)
        self.bg = cv.blank((235, 235, 225))

    def _randomize(self, rng):
        while True:
            agent, block = rng.uniform(50, 462, 2), rng.uniform(110, 402, 2)
            if np.hypot(*(agent - block)) > 110:  # start apart: no overlap
                break
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = [*agent, *block, rng.uniform(-np.pi, np.pi)]
        self.data.ctrl[:] = agent
        mujoco.mj_forward(self.model, self.data)

    def _step(self, a):
        self.data.ctrl[:] = self.data.qpos[:2] + 100.0 * a
        self._physics()

    def distance(self, state, goal):
        """Success: agent and block positions within 20 units of the goal's (4-vector norm) and the block's
        angle within pi/9."""
        s, g = np.asarray(state), np.asarray(goal)
        return max(float(np.linalg.norm(s[:4] - g[:4])) / 20.0, abs(float(wrap(s[4] - g[4]))) / (np.pi / 9))

    def observables(self, states):
        return (["agent x", "agent y", "block x", "block y", "block sin", "block cos"],
                np.column_stack([states[:, :4], np.sin(states[:, 4]), np.cos(states[:, 4])]))
    parts = {"agent": [0, 1], "block": [2, 3], "angle": [4, 5]}

    def render(self):
        out, q = self.bg.copy(), self.data.qpos
        c, s = math.cos(q[4]), math.sin(q[4])
        # the stem (green) first, reaching 15 units under the bar (orange), then the bar: no anti-aliasing seam.
        # Two colours make the angle the direction from one patch of colour to the other (README: pushT)
        (bx, by, bhx, bhy), (sx, sy, shx, shy) = T_BOXES
        for (x, y, hx, hy), color in zip(((sx, sy - 7.5, shx, shy + 7.5), (bx, by, bhx, bhy)),
                                         (rgb(60, 150, 80), rgb(235, 120, 50))):
            self.canvas.box(out, q[2] + c * x - s * y, q[3] + s * x + c * y, hx, hy, q[4], color)
        self.canvas.circle(out, q[0], q[1], self.R, rgb(50, 90, 220))
        return out


REACHER_XML = """
<mujoco model="reacher">
  <option timestep="0.01"><flag contact="disable"/></option>
  <default>
    <joint type="hinge" axis="0 0 1" damping="0.01"/>
    <motor gear="0.05" ctrlrange="-1 1" ctrllimited="true"/>
  </default>
  <worldbody>
    <body name="arm" pos="0 0 0.01">
      <joint name="shoulder"/>
      <geom type="capsule" fromto="0 0 0 0.12 0 0" size="0.01"/>
      <body name="hand" pos="0.12 0 0">
        <joint name="wrist" limited="true" range="-160 160"/>
        <geom type="capsule" fromto="0 0 0 0.1 0 0" size="0.01"/>
        <geom type="sphere" pos="0.12 0 0" size="0.01"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="shoulder"/><motor joint="wrist"/></actuator>
</mujoco>"""


class Reacher(_MujocoEnv):
    """DeepMind Control's two-link planar reacher (links 0.12 m, wrist limited to +-160 degrees),
    torque actions, 0.02 s per step. state = qpos [shoulder, wrist] + qvel (2) + ctrl (2), radians."""
    name = "reacher"
    L = 0.12

    def __init__(self, img=64):
        super().__init__(REACHER_XML, img, 2, substeps=2)
        self.canvas = cv = Canvas(img, -0.27, -0.27, 0.54, y_down=False)
        self.bg = cv.blank((225, 228, 235))
        cv.circle(self.bg, 0.0, 0.0, 0.25, rgb(245, 245, 240))  # the arm's reach

    def _randomize(self, rng):
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = rng.uniform(-np.pi, np.pi), rng.uniform(-2.79, 2.79)
        mujoco.mj_forward(self.model, self.data)

    def _step(self, a):
        self.data.ctrl[:] = a
        self._physics()

    def distance(self, state, goal):
        """Success: both joints within 0.05 rad of the goal's (wrapped)."""
        return float(np.abs(wrap(np.asarray(state)[:2] - np.asarray(goal)[:2])).max()) / 0.05

    def observables(self, states):   # the joints, and the outer link's direction as drawn (q1 + q2)
        q1, q2 = states[:, 0], states[:, 1]
        return (["sin q1", "cos q1", "sin q2", "cos q2", "sin q1+q2", "cos q1+q2"],
                np.column_stack([np.sin(q1), np.cos(q1), np.sin(q2), np.cos(q2), np.sin(q1 + q2), np.cos(q1 + q2)]))
    parts = {"q1": [0, 1], "q2": [2, 3], "q1+q2": [4, 5]}

    def render(self):
        out, (q1, q2), L, cv = self.bg.copy(), self.data.qpos, self.L, self.canvas
        x1, y1 = L * math.cos(q1), L * math.sin(q1)
        x2, y2 = x1 + L * math.cos(q1 + q2), y1 + L * math.sin(q1 + q2)
        cv.box(out, x1 / 2, y1 / 2, L / 2, 0.014, q1, rgb(50, 80, 160))  # upper arm, then forearm on top
        cv.box(out, (x1 + x2) / 2, (y1 + y2) / 2, L / 2, 0.011, q1 + q2, rgb(40, 160, 110))
        cv.circle(out, 0.0, 0.0, 0.018, rgb(60, 60, 70))
        cv.circle(out, x2, y2, 0.02, rgb(220, 50, 50))
        return out


CUBE_XML = """
<mujoco model="cube">
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <default>
    <default class="finger">
      <geom type="box" size="0.008 0.005 0.025" mass="0.02" condim="4" friction="1.5 0.02 0.0001"/>
    </default>
    <default class="fingerpd"><position kp="200" kv="4" forcerange="-5 5"/></default>
  </default>
  <worldbody>
    <geom type="plane" size="0.5 0.5 0.01" friction="0.6 0.005 0.0001"/>
    <body name="gripper" gravcomp="1">
      <joint name="gx" type="slide" axis="1 0 0"/> <joint name="gy" type="slide" axis="0 1 0"/>
      <joint name="gz" type="slide" axis="0 0 1"/> <joint name="gyaw" type="hinge" axis="0 0 1"/>
      <geom type="box" size="0.015 0.05 0.01" mass="0.3"/>
      <body name="left" gravcomp="1">
        <joint name="fl" type="slide" axis="0 1 0" range="0 0.045" limited="true"/>
        <geom class="finger" pos="0 0.005 -0.035"/>
      </body>
      <body name="right" gravcomp="1">
        <joint name="fr" type="slide" axis="0 -1 0" range="0 0.045" limited="true"/>
        <geom class="finger" pos="0 -0.005 -0.035"/>
      </body>
    </body>
    <body name="cube" pos="0 0 0.02">
      <freejoint/>
      <geom type="box" size="0.02 0.02 0.02" mass="0.05" condim="4" friction="1 0.01 0.0001"/>
    </body>
  </worldbody>
  <actuator>
    <position joint="gx" kp="1000" kv="40"/> <position joint="gy" kp="1000" kv="40"/>
    <position joint="gz" kp="1000" kv="40"/> <position joint="gyaw" kp="0.5" kv="0.03"/>
    <position joint="fl" class="fingerpd"/> <position joint="fr" class="fingerpd"/>
  </actuator>
</mujoco>"""


def quat_yaw(w, x, y, z):
    """Heading (rotation about the vertical) of a unit quaternion."""
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class Cube(_MujocoEnv):
    """A free 4 cm cube on a table and a Cartesian two-finger gripper (OGBench cube-single in spirit).
    Action: (dx, dy, dz) * 0.05 m and dyaw * 0.3 rad move the held PD targets, gripper in [-1, 1]
    (-1 open, +1 closed) sets the finger targets; 25 x 2 ms per step. state = qpos [gripper x, y, z,
    yaw, left finger, right finger, cube x, y, z, qw, qx, qy, qz] (13) + qvel (12) + ctrl (6), metres."""
    name = "cube"
    XY, ZMIN, ZMAX, OPEN = 0.15, 0.062, 0.25, 0.045  # PD target limits; at ZMIN the fingertips are 2 mm up
    LIFT, SHIFT = 1.5, 0.3  # drawn at height z: sizes times 1 + LIFT * z, moved up the image by SHIFT * z

    def __init__(self, img=64):
        super().__init__(CUBE_XML, img, 5, substeps=25)
        self.canvas = cv = Canvas(img, -0.19, -0.16, 0.38, y_down=False)
        self.bg = cv.blank((190, 170, 140))

    def _randomize(self, rng):
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        x, y, yaw = *rng.uniform(-0.1, 0.1, 2), rng.uniform(-np.pi, np.pi)
        d.qpos[6:] = x, y, 0.02, math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)
        d.qpos[:6] = *rng.uniform(-0.12, 0.12, 2), rng.uniform(0.1, 0.2), rng.uniform(-1, 1), self.OPEN, self.OPEN
        d.ctrl[:] = d.qpos[:6]
        mujoco.mj_forward(m, d)

    def _step(self, a):
        c = self.data.ctrl  # PD targets are held between steps and kept inside the workspace
        c[0] = min(max(c[0] + 0.05 * a[0], -self.XY), self.XY)
        c[1] = min(max(c[1] + 0.05 * a[1], -self.XY), self.XY)
        c[2] = min(max(c[2] + 0.05 * a[2], self.ZMIN), self.ZMAX)
        c[3] = min(max(c[3] + 0.3 * a[3], -np.pi / 2), np.pi / 2)
        c[4] = c[5] = self.OPEN * (1.0 - a[4]) / 2
        self._physics()

    def distance(self, state, goal):
        """Success: the cube's centre within 0.04 m of the goal's."""
        return float(np.linalg.norm(np.asarray(state)[6:9] - np.asarray(goal)[6:9])) / 0.04

    def observables(self, states):
        return ["gripper x", "gripper y", "gripper z", "cube x", "cube y", "cube z"], states[:, [0, 1, 2, 6, 7, 8]]
    parts = {"gripper": [0, 1, 2], "cube": [3, 4, 5]}

    def render(self):
        out, q, cv = self.bg.copy(), self.data.qpos, self.canvas
        gx, gy, gz, gyaw, fl, fr, cx, cy, cz = q[:9]
        cyaw, c, s = quat_yaw(*q[9:13]), math.cos(gyaw), math.sin(gyaw)
        # shadows on the table: the gap between an object and its shadow shows its height
        cv.box(out, cx, cy, 0.02, 0.02, cyaw, rgb(0, 0, 0), 0.35)
        cv.box(out, gx, gy, 0.015, 0.05, gyaw, rgb(0, 0, 0), 0.2)
        # the cube: the higher, the further up the image, the larger and the lighter
        k, lift = 0.02 * (1 + self.LIFT * cz), min(6 * max(cz - 0.02, 0.0), 1.0)
        cv.box(out, cx, cy + self.SHIFT * cz, k, k, cyaw, rgb(200, 30, 40) + lift * rgb(55, 150, 110))
        # the gripper, half transparent so the cube stays visible under it; fingers show the opening
        k, fz = 1 + self.LIFT * gz, gz - 0.035  # the fingers hang below the palm
        cv.box(out, gx, gy + self.SHIFT * gz, 0.015 * k, 0.05 * k, gyaw, rgb(40, 40, 50), 0.45)
        k = 1 + self.LIFT * fz
        for off in (fl + 0.005, -fr - 0.005):
            x, y = gx - s * off * k, gy + c * off * k + self.SHIFT * fz
            cv.box(out, x, y, 0.008 * k, 0.005 * k, gyaw, rgb(20, 60, 200), 0.9)
        return out


ENVS = ("twoRoom", "pushT", "reacher", "cube")
WORLDS = dict(zip(ENVS, (TwoRoom, PushT, Reacher, Cube)))


def make_env(name, img=64, render_mode="rgb_array"):
    """One of the four environments, with img x img RGB observations (the only render mode)."""
    if name not in WORLDS:
        raise InputError(f"unknown environment {name!r}: choose one of {', '.join(ENVS)}")
    if render_mode != "rgb_array":
        raise InputError(f"render_mode {render_mode!r} is not supported: images come as 'rgb_array'")
    env = WORLDS[name](img)
    # a spec lets gymnasium.make (and its checker) build copies: gym.make(env.spec)
    env.spec = gym.envs.registration.EnvSpec(f"subjepa/{name}-v0", make_env, kwargs=dict(name=name, img=img))
    return env

# -----------------------------------------------------------------------------
# scripted data policies: privileged (they read the env's state), noisy, varied

def toward(delta, scale, gain=1.0):
    """Action moving by `delta` in steps of at most `scale`, clipped to [-1, 1]."""
    return np.clip(gain * np.asarray(delta) / scale, -1.0, 1.0)


class TwoRoomPolicy:
    """Noisy 'go to the door, then to a random target' (in the other room half the time)."""

    def __init__(self, env, rng, held=False):
        self.env, self.rng = env, rng
        self.noise = rng.uniform(0.1, 0.5)
        self._new_target()

    def _new_target(self):
        env, rng = self.env, self.rng
        x = float(self.env.pos[0])
        other = rng.random() < 0.5
        left = (x < env.WALL_X) != other  # the target's side
        lo, hi = (env.LO, env.WALL_X - 12) if left else (env.WALL_X + 12, env.HI)
        self.target = np.array([rng.uniform(lo, hi), rng.uniform(env.LO, env.HI)])
        self.speed = rng.uniform(0.4, 1.0)

    def __call__(self):
        env, rng = self.env, self.rng
        p = env.pos
        if np.hypot(*(self.target - p)) < 4 or rng.random() < 0.01:
            self._new_target()
        side = 1.0 if self.target[0] > env.WALL_X else -1.0
        if (p[0] - env.WALL_X) * side > 12:  # in the target's room
            goal = self.target
        elif abs(p[0] - env.WALL_X) < 13 or abs(p[1] - env.DOOR_Y) < 3:  # in the doorway or lined up with it
            goal = np.array([env.WALL_X + 20 * side, env.DOOR_Y])
        else:  # line up with the door first
            goal = np.array([env.WALL_X - 20 * side, env.DOOR_Y])
        a = toward(goal - p, env.SPEED, self.speed * 2) * self.speed + self.noise * rng.standard_normal(2)
        return np.clip(a, -1, 1).astype(np.float32)


def t_outline():
    """The T's outline in its body frame: (points (8, 2), outward normals (8, 2), edge lengths (8,))."""
    (bx, by, bhx, bhy), (sx, sy, shx, shy) = T_BOXES
    top, mid, bot = by - bhy, by + bhy, sy + shy
    v = np.array([(-60, top), (60, top), (60, mid), (15, mid), (15, bot), (-15, bot), (-15, mid), (-60, mid)])
    e = np.roll(v, -1, axis=0) - v
    length = np.hypot(e[:, 0], e[:, 1])
    normal = np.stack([e[:, 1], -e[:, 0]], 1) / length[:, None]  # clockwise in y-down = outward
    return v, normal, length


class PushTPolicy:
    """Noisy pusher: walk to a random point of the T's outline, then push through it for a while;
    sometimes wander instead. Directions, depths and durations vary, so the block moves and turns."""

    def __init__(self, env, rng, held=False):
        self.env, self.rng = env, rng
        self.noise = rng.uniform(0.1, 0.4)
        self.verts, self.normals, self.lengths = t_outline()
        self._plan()

    def _plan(self):
        rng, q = self.rng, self.env.data.qpos
        self.wander = rng.random() < 0.15
        self.target = rng.uniform(40, 472, 2)
        # a few candidate contacts; away from the centre, take the one pushing the block back inwards
        i = rng.choice(8, size=4, p=self.lengths / self.lengths.sum())
        e = np.roll(self.verts, -1, axis=0)[i] - self.verts[i]
        points = self.verts[i] + rng.uniform(0.1, 0.9, (4, 1)) * e  # in the block frame
        slant = rng.uniform(-0.5, 0.5, (4, 1)) * e / self.lengths[i, None]  # slanted pushes turn the block
        normals = self.normals[i] + slant
        c, s = math.cos(q[4]), math.sin(q[4])
        inward = (256.0 - q[2:4]) @ np.array([[c, -s], [s, c]])  # towards the centre, in the block frame
        k = int(np.argmin(normals @ inward)) if np.hypot(*inward) > 120 else 0
        self.point, self.normal = points[k], normals[k]
        self.depth, self.speed = rng.uniform(30, 80), rng.uniform(0.3, 0.7)
        self.pushing, self.timer = False, int(rng.integers(5, 25))

    def __call__(self):
        q = self.env.data.qpos
        agent, c, s = q[:2], math.cos(q[4]), math.sin(q[4])
        rot = np.array([[c, -s], [s, c]])
        point, normal = q[2:4] + rot @ self.point, rot @ self.normal
        if self.wander:
            goal = self.target
        elif self.pushing:  # the goal moves with the block: a steady push
            goal = point - self.depth * normal
        else:
            goal = np.clip(point + (PushT.R + 12) * normal, 20, 492)
            if np.hypot(*(goal - agent)) < 10:
                self.pushing, self.timer = True, int(self.rng.integers(5, 25))
            ra, rg = agent - q[2:4], goal - q[2:4]  # go round the block, not through it
            turn = math.atan2(ra[0] * rg[1] - ra[1] * rg[0], ra @ rg)
            if abs(turn) > 0.6 and np.hypot(*ra) < 115:
                phi = math.atan2(ra[1], ra[0]) + math.copysign(0.8, turn)
                goal = q[2:4] + 115 * np.array([math.cos(phi), math.sin(phi)])
        self.timer -= self.pushing or self.wander or self.rng.random() < 0.04  # reaching may time out too
        if self.timer <= 0:
            self._plan()
        a = toward(goal - agent, 100.0, 3.0) * self.speed + self.noise * self.rng.standard_normal(2)
        return np.clip(a, -1, 1).astype(np.float32)


class ReacherPolicy:
    """Random torques, uniform in [-1, 1] and new each step: the reference's reacher data (a random policy)."""
    version = 2   # version 1 drew smooth torques, which swung the arm 3x as far in 25 steps (README)

    def __init__(self, env, rng, held=False):
        self.rng = rng

    def __call__(self):
        return self.rng.uniform(-1.0, 1.0, 2).astype(np.float32)


class CubePolicy:
    """Noisy scripted pick-and-place: above the cube, descend, close, lift, carry, lower, release,
    rise, and again; a fifth of the episodes start with a spell of random motion instead. Training
    episodes explore more (version 2): noisier motion, and spells of 5-20 random steps, the gripper's
    command included, may start at any step. A planner tries plans unlike the script's, and a model trained
    on the script's alone errs on them 4x more (README, "When planning fails"). Held-out episodes, the
    planner's starts and goals, are version 1's: the script's task."""
    APPROACH, DESCEND, CLOSE, LIFT, CARRY, LOWER, RELEASE, RISE = range(8)
    version = 2

    def __init__(self, env, rng, held=False):
        self.env, self.rng, self.explore = env, rng, not held
        self.noise = rng.uniform(*((0.1, 0.5) if self.explore else (0.05, 0.3)))
        self.random_steps = int(rng.integers(10, 60)) if rng.random() < 0.2 else 0
        self.u = np.zeros(5)
        self._goto(self.APPROACH)

    def _goto(self, phase):
        rng = self.rng
        self.phase, self.timer = phase, 0
        if phase == self.APPROACH:
            self.hover, self.lift = rng.uniform(0.1, 0.16), rng.uniform(0.1, 0.22)
            self.place = rng.uniform(-0.11, 0.11, 2)
            self.drop = rng.uniform(0.0, 0.06) if rng.random() < 0.3 else 0.0  # sometimes let it fall

    def __call__(self):
        rng, env = self.rng, self.env
        if self.explore and self.random_steps == 0 and rng.random() < 0.015:
            self.random_steps = int(rng.integers(5, 21))
        if self.random_steps > 0:
            self.random_steps -= 1
            self.u = 0.8 * self.u + 0.6 * rng.standard_normal(5)
            return np.clip(self.u, -1, 1).astype(np.float32)
        q, tgt = env.data.qpos, env.data.ctrl[:4]
        cube, gz = q[6:9], q[2]
        # the grip heading: the cube's (modulo 90 degrees) nearest the gripper's, within the yaw limits
        heads = (quat_yaw(*q[9:13]) + np.pi / 4) % (np.pi / 2) - np.pi / 4 + np.array([-np.pi / 2, 0, np.pi / 2])
        heads = heads[np.abs(heads) <= np.pi / 2]
        turn = heads[np.argmin(np.abs(heads - q[3]))] - q[3]
        goal, grip, yaw = tgt[:3].copy(), -1.0, tgt[3]
        self.timer += 1
        P = self.phase
        if P == self.APPROACH:
            goal[:] = cube[0], cube[1], self.hover
            yaw = q[3] + turn
            if np.hypot(*(q[:2] - cube[:2])) < 0.015 and abs(turn) < 0.15:
                self._goto(self.DESCEND)
        elif P == self.DESCEND:
            goal[:] = cube[0], cube[1], env.ZMIN
            if gz < env.ZMIN + 0.006:
                self._goto(self.CLOSE)
        elif P == self.CLOSE:
            grip = 1.0
            if self.timer >= 4:
                self._goto(self.LIFT)
        elif P in (self.LIFT, self.CARRY, self.LOWER):
            grip = 1.0
            xy = self.place if P != self.LIFT else tgt[:2]
            goal[:] = xy[0], xy[1], self.lift if P != self.LOWER else env.ZMIN + self.drop
            if P == self.LIFT and gz > self.lift - 0.01 or P == self.CARRY and np.hypot(*(q[:2] - xy)) < 0.008:
                self._goto(P + 1)
            elif P == self.LOWER and gz < env.ZMIN + self.drop + 0.006:
                self._goto(self.RELEASE)
            if cube[2] < 0.03 and gz > 0.09:  # dropped it: start over
                self._goto(self.APPROACH)
        elif P == self.RELEASE:
            if self.timer >= 3:
                self._goto(self.RISE)
        elif P == self.RISE:
            goal[2] = self.hover
            if gz > self.hover - 0.01:
                self._goto(self.APPROACH)
        if self.timer > 30:  # stuck: start over
            self._goto(self.APPROACH)
        a = np.empty(5)
        a[:3] = toward(goal - tgt[:3], 0.05)
        a[3] = np.clip((yaw - tgt[3]) / 0.3, -1, 1)
        a[4] = grip
        a[:4] += self.noise * rng.standard_normal(4)
        return np.clip(a, -1, 1).astype(np.float32)


# Each is called as policy(env, rng, held), held True for the held-out episodes (planning's starts and goals), and
# then returns an action a step.
POLICIES = {"twoRoom": TwoRoomPolicy, "pushT": PushTPolicy, "reacher": ReacherPolicy, "cube": CubePolicy}


def run_episode(env, policy, steps):
    """Run `policy` for `steps` steps: frames (steps+1, H, W, 3), actions (steps+1, A) with a zero last
    row (no action follows the last frame), states (steps+1, S)."""
    obs = env.render()
    frames = np.empty((steps + 1, *obs.shape), np.uint8)
    actions = np.zeros((steps + 1, env.action_space.shape[0]), np.float32)
    states = np.empty((steps + 1, env.get_state().size))
    frames[0], states[0] = obs, env.get_state()
    for t in range(steps):
        actions[t] = policy()
        frames[t + 1] = env.step(actions[t])[0]
        states[t + 1] = env.get_state()
    return frames, actions, states

# -----------------------------------------------------------------------------
# datasets: collected in parallel, written atomically, loaded memory-mapped

FORMAT = 1
DATA_DEFAULTS = {  # episodes of `steps` steps (steps + 1 frames); at 64 px each is 2.5 GB on disk
    "twoRoom": dict(episodes=1000, steps=100),
    "pushT": dict(episodes=2000, steps=100),
    "reacher": dict(episodes=2000, steps=100),
    "cube": dict(episodes=2000, steps=100),
}


@dataclass
class Dataset:
    """A loaded dataset; arrays are read-only memory maps. Episode e is rows episodes[e]:episodes[e+1]."""
    frames: np.ndarray  # (N, H, W, 3) uint8
    actions: np.ndarray  # (N, A) float32, row i applied at frame i; the last row of an episode is zeros
    states: np.ndarray  # (N, S) float64, the env's get_state() at frame i
    episodes: np.ndarray  # (E+1,) int64 row offsets
    meta: dict  # env, img, steps, episodes, seed, action_mean, action_std, format



_ENV_CACHE = {}  # per process: building a MuJoCo model costs as much as stepping a short episode
DATA_FILES = ("frames", "actions", "states")


def _episode(job):
    # one episode, seeded by (seed, index) alone: the dataset does not depend on the number of workers
    name, img, steps, seed, i, held = job
    rng = np.random.default_rng([seed, i])
    if (name, img) not in _ENV_CACHE:
        _ENV_CACHE[name, img] = make_env(name, img)
    env = _ENV_CACHE[name, img]
    env.reset(seed=int(rng.integers(2**31)))
    return run_episode(env, POLICIES[name](env, rng, held), steps)


def _collect_into(tmp, jobs, count):
    """Write the episodes `jobs` straight into the dataset files in `tmp`, calling count() after each."""
    arrays = [np.load(os.path.join(tmp, f + ".npy"), mmap_mode="r+") for f in DATA_FILES]
    for job in jobs:
        L, i = job[2] + 1, job[4]
        for arr, x in zip(arrays, _episode(job)):
            arr[i * L:(i + 1) * L] = x
        count()
    for arr in arrays:
        arr.flush()


def _collection_worker(tmp, jobs, done, w):
    # All a worker reports is done[w], its count (a slot of its own: no lock that a killed worker could hold). No
    # episode travels through a pipe, so a worker killed at any moment (by the parent after Ctrl-C, or by the
    # out-of-memory killer) leaves nothing half-sent for the parent to wait on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # where an ignored signal is not inherited (Windows)

    def count():
        done[w] += 1
    _collect_into(tmp, jobs, count)


def _collect_in_workers(tmp, jobs, workers, bar):
    """Worker w collects jobs w, w + workers, ... straight into the files in `tmp`. spawn: safe on every OS and with
    threaded parents (torch); workers import this module afresh (and the calling script's __main__ module, so
    scripts keep their work under a __main__ guard). Started with Ctrl-C ignored, they ignore it from their first
    instruction (an ignored signal stays ignored through exec), their seconds of importing torch included: Ctrl-C
    reaches the parent alone, which kills them on its way out, as it does when one of them fails."""
    ctx = mp.get_context("spawn")
    done = ctx.RawArray("q", workers)
    procs = [ctx.Process(target=_collection_worker, args=(tmp, jobs[w::workers], done, w), daemon=True)
             for w in range(workers)]
    with ignoring_ctrl_c():
        for p in procs:
            p.start()
    try:
        while True:
            finished = all(p.exitcode == 0 for p in procs)   # read first: their counts are then complete
            bar.update(sum(done) - bar.n)
            for w, p in enumerate(procs):
                if p.exitcode:   # None: running; 0: done; < 0: killed by a signal; > 0: raised
                    raise ChildProcessError(f"collection worker {w} " + (
                        f"was killed (signal {-p.exitcode}; out of memory? try fewer --workers)"
                        if p.exitcode < 0 else "failed: its traceback is above"))
            if finished:
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            p.kill()
            p.join()


@contextmanager
def ignoring_ctrl_c():
    """Ctrl-C is ignored inside, and processes started inside ignore it. (One pressed inside is lost.)"""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def collect(name, path, episodes=None, steps=None, img=64, seed=0, workers=None):
    """Collect `episodes` scripted episodes of `steps` steps into the dataset directory `path`.

    Format (a directory; N rows, E episodes, A action dims, S state dims):
      frames.npy   uint8   (N, H, W, 3)  RGB observations
      actions.npy  float32 (N, A)        row i is the action taken at frame i; an episode's last row is zeros
      states.npy   float64 (N, S)        simulator state at frame i (env.get_state(); env.set_state restores it)
      episodes.npy int64   (E+1,)        offsets: episode e is rows offsets[e]:offsets[e+1]
      meta.json    {"format", "env", "world", "policy", "img", "steps", "episodes", "seed", "action_mean",
                   "action_std"}; world: the version of the world that drew the frames and moved the states
                   (`version` of its class);
                   policy: the version of the scripted policy that collected it (`version` of its class, else 1);
                   action statistics per dimension, over real actions only (padding rows excluded).
    Written under a temporary name next to `path` (.NAME.tmpPID) and renamed at the end: an interrupted
    run leaves nothing at `path` (a killed one may leave the hidden temporary, to delete). Episode i is
    seeded by (seed, i) alone, so the result does not depend on `workers`."""
    if name not in ENVS:
        make_env(name)  # raises the clear error
    if os.path.exists(path):
        raise InputError(f"{path} already exists: delete it or choose another path")
    episodes = DATA_DEFAULTS[name]["episodes"] if episodes is None else episodes
    steps = DATA_DEFAULTS[name]["steps"] if steps is None else steps
    if episodes < 1 or steps < 1:
        raise InputError(f"a dataset needs at least 1 episode of at least 1 step, not {episodes} of {steps}")
    workers = min(workers or os.cpu_count() or 1, episodes)
    env = make_env(name, img)
    A, S, L, N = env.action_space.shape[0], env.get_state().size, steps + 1, episodes * (steps + 1)
    parent, base = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}.tmp{os.getpid()}")
    os.makedirs(tmp)
    try:
        for f, dtype, shape in zip(DATA_FILES, (np.uint8, np.float32, np.float64), ((img, img, 3), (A,), (S,))):
            np.lib.format.open_memmap(os.path.join(tmp, f + ".npy"), "w+", dtype, (N, *shape))  # the empty files
        held = split_episodes(episodes)[1]   # a policy may collect them apart (the cube's does)
        jobs = [(name, img, steps, seed, i, i in held) for i in range(episodes)]
        with tqdm(total=episodes, desc=f"collect {name}", unit="ep") as bar:
            if workers == 1:
                _collect_into(tmp, jobs, bar.update)
            else:
                _collect_in_workers(tmp, jobs, workers, bar)
        frames, actions, states = [np.load(os.path.join(tmp, f + ".npy"), mmap_mode="r") for f in DATA_FILES]
        real = np.ones(N, bool)
        real[L - 1::L] = False  # the padding rows
        offsets = np.arange(0, N + 1, L, dtype=np.int64)
        np.save(os.path.join(tmp, "episodes.npy"), offsets)
        meta = dict(format=FORMAT, env=name, world=env.version, policy=getattr(POLICIES[name], "version", 1),
                    img=img, steps=steps, episodes=episodes, seed=seed,
                    action_mean=actions[real].mean(0, dtype=np.float64).tolist(),
                    action_std=actions[real].std(0, dtype=np.float64).tolist())
        del frames, actions, states
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        os.rename(tmp, path)  # atomic: `path` is either absent or complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_dataset(path):
    """Load and check a dataset written by `collect` (or by you, in its format); arrays are memory-mapped."""
    def bad(what):
        return InputError(f"dataset {path}: {what}; delete it and collect it again")
    if os.path.isfile(path):
        raise InputError(f"{path} is a file, not a dataset: pass a dataset's folder")
    if not os.path.isdir(path):   # the command that collects it, its world and size read off a name as data/ENV-64px
        env, _, img = os.path.basename(os.path.normpath(path)).rpartition("-")
        known = env in PRESETS and img.endswith("px") and img[:-2].isdigit()
        env, size = (env, "" if img == "64px" else f" --img {img[:-2]}") if known else ("ENV", "")
        raise InputError(f"no dataset at {path}: collect one with `python subjepa.py --collect {env}{size} --out {path}`")
    names = ("frames", "actions", "states", "episodes")
    files = [n + ".npy" for n in names] + ["meta.json"]
    missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
    entries = os.listdir(path)
    if len(missing) == len(files) and entries:   # not a dataset (a folder of them, say): delete nothing
        inside = sorted(os.path.join(path, d) for d in entries if os.path.isfile(os.path.join(path, d, files[-1])))
        raise InputError(f"{path} is not a dataset (no {', '.join(files)}): "
                         + (f"pass one of the datasets in it: {', '.join(inside)}" if inside else "pass a dataset's folder"))
    if missing:
        raise InputError(f"dataset {path} has no {missing[0]}: it is incomplete; delete it and collect it again")
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        fr, ac, st, ep = (np.load(os.path.join(path, n + ".npy"), mmap_mode="r") for n in names)
    except (ValueError, OSError, EOFError) as e:
        raise bad(f"a file is corrupt ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise bad(f"meta.json is not a format {FORMAT} header")
    dtypes = (np.uint8, 4), (np.float32, 2), (np.float64, 2), (np.int64, 1)
    for n, arr, (dtype, ndim) in zip(names, (fr, ac, st, ep), dtypes):
        if arr.dtype != dtype or arr.ndim != ndim:
            raise bad(f"{n}.npy is {arr.dtype} with {arr.ndim} dims, expected {np.dtype(dtype)} with {ndim}")
    N, img = len(fr), meta.get("img")
    if fr.shape[1:] != (img, img, 3) or len(ac) != N or len(st) != N:
        raise bad(f"frames {fr.shape}, actions {ac.shape}, states {st.shape} and img {img} disagree")
    if len(ep) < 2 or ep[0] != 0 or ep[-1] != N or np.any(np.diff(ep) < 2):
        raise bad(f"episodes.npy must rise from 0 to {N} by at least 2 rows per episode")
    if not len(meta.get("action_mean", ())) == len(meta.get("action_std", ())) == ac.shape[1]:
        raise bad(f"meta.json needs action_mean and action_std of length {ac.shape[1]}")
    for n, arr in (("actions.npy", ac), ("states.npy", st), ("action statistics", meta["action_mean"] + meta["action_std"])):
        if not np.isfinite(arr).all():   # NaN actions would train a NaN model
            raise bad(f"{n} holds NaN or infinite values")
    if min(meta["action_std"]) <= 0:
        raise bad("an action dimension never varies (action_std 0), so it cannot be z-scored")
    return Dataset(fr, ac, st, ep, meta)


def current_data(ds, path, default):
    """Refuse a dataset that another version of its world drew or moved (a planner's frames would not look like
    them, or its plans would not move as they did) and, at a `default` path, one that another version of its
    world's scripted policy collected: it would stand in silently for the data this code collects."""
    was, now = ds.meta.get("world", 1), getattr(WORLDS.get(ds.meta["env"]), "version", 1)
    if was != now:
        raise InputError(f"{path} was collected in version {was} of the {ds.meta['env']} world, this code's is "
                         f"version {now}: delete it (rm -r {path}) to collect it anew")
    was, now = ds.meta.get("policy", 1), getattr(POLICIES.get(ds.meta["env"]), "version", 1)
    if default and was != now:
        raise InputError(f"{path} was collected by version {was} of the {ds.meta['env']} data policy, this code's is "
                         f"{now}: delete it (rm -r {path}) to collect it anew, or pass --data {path} to use it")


def coverage(name, states, episodes, span=25):
    """How much the scripted data moves things: shares of episodes, and the mean change over `span` steps."""
    out, d = {}, []
    for a, b in zip(episodes[:-1], episodes[1:]):
        s = states[a:b]
        if name == "twoRoom":
            out.setdefault("crosses the wall", []).append(np.ptp(np.sign(s[:, 0] - TwoRoom.WALL_X)) > 0)
            d.append(np.hypot(*(s[span:, :2] - s[:-span, :2]).T).mean())
        elif name == "pushT":
            moved = np.hypot(*(s[:, 2:4] - s[0, 2:4]).T).max()
            out.setdefault("block moves > 20 units", []).append(moved > 20)
            out.setdefault("block turns > pi/9", []).append(np.abs(s[:, 4] - s[0, 4]).max() > np.pi / 9)
            d.append(np.hypot(*(s[span:, 2:4] - s[:-span, 2:4]).T).mean())
        elif name == "reacher":
            d.append(np.abs(wrap(s[span:, :2] - s[:-span, :2])).mean())
        elif name == "cube":
            out.setdefault("cube moves > 4 cm", []).append(np.hypot(*(s[:, 6:8] - s[0, 6:8]).T).max() > 0.04)
            out.setdefault("cube lifted > 3 cm", []).append(s[:, 8].max() > 0.05)
            d.append(np.linalg.norm(s[span:, 6:9] - s[:-span, 6:9], axis=1).mean())
    out = {k: float(np.mean(v)) for k, v in out.items()}
    out[f"mean change over {span} steps"] = float(np.mean(d))
    env = make_env(name, 8)  # a planning task met before any action: the goal is the start's state
    pairs = [(i, i + span) for a, b in zip(episodes[:-1], episodes[1:]) for i in range(a, b - span)]
    out["goal met at the start"] = float(np.mean([env.is_success(states[i], states[j]) for i, j in pairs]))
    return out

# -----------------------------------------------------------------------------
# pictures: a PNG writer from the standard library, and a contact sheet

def write_png(path, img):
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG."""
    img = np.ascontiguousarray(img, np.uint8)
    h, w = img.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], 1).tobytes()  # filter 0 per row

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    with atomic(path) as tmp, open(tmp, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def contact_sheet(path, rows, scale=2, pad=2):
    """Write a grid of equally sized images (a list of rows of (H, W, 3) uint8) as one PNG."""
    h, w = rows[0][0].shape[:2]
    n = max(len(r) for r in rows)
    sheet = np.full((pad + len(rows) * (h * scale + pad), pad + n * (w * scale + pad), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            y, x = pad + i * (h * scale + pad), pad + j * (w * scale + pad)
            sheet[y:y + h * scale, x:x + w * scale] = im.repeat(scale, 0).repeat(scale, 1)
    write_png(path, sheet)


def envs_sheet(path, img=64, frames=(0, 10, 20, 30, 40), seed=0):
    """The picture of the four environments: a row per env, a scripted episode at the given steps."""
    rows = []
    for i, name in enumerate(ENVS):
        f, _, _ = _episode((name, img, max(frames), seed, i, True))   # as the held-out episodes
        rows.append([f[t] for t in frames])
    contact_sheet(path, rows)

# -----------------------------------------------------------------------------
# Training clips


def split_episodes(n):
    """Episode ids for training and held-out ones (the last 10%, at least 1): validation and planning
    evaluation only ever use the held-out ones."""
    held = max(1, n // 10)
    return range(n - held), range(n - held, n)


class Clips:
    """Training clips from a dataset: T frames every F steps and the T-1 blocks of F z-scored actions
    taken between them. Frames stay uint8 until the model sees them; on a GPU the whole dataset is
    moved there once and gathered by index (no loader workers), on a CPU it stays memory-mapped."""

    def __init__(self, ds, episodes, frameskip=5, frames=4, device="cpu", resident=None):
        F, T = frameskip, frames
        offsets = ds.episodes
        # a clip starting at row i needs frames i .. i+(T-1)F and action rows i .. i+(T-1)F-1 in one episode
        self.starts = torch.cat([torch.arange(offsets[e], offsets[e + 1] - (T - 1) * F) for e in episodes])
        if len(self.starts) == 0:
            raise InputError(f"episodes are too short for clips of {T} frames every {F} steps")
        self.F, self.T, self.device = F, T, torch.device(device)
        self.starts = self.starts.to(self.device)
        mean, std = (torch.tensor(ds.meta[k], dtype=torch.float32) for k in ("action_mean", "action_std"))
        self.actions = ((torch.tensor(ds.actions) - mean) / std).to(self.device)  # (N, A)
        resident = self.device.type != "cpu" if resident is None else resident
        self.frames = torch.tensor(ds.frames, device=self.device) if resident else ds.frames

    def __len__(self):
        return len(self.starts)

    def get(self, idx):
        """Clips number idx (B,) -> frames (B, T, 3, H, W) uint8, actions (B, T-1, F*A)."""
        i = self.starts[idx][:, None]                                       # (B, 1)
        rows = i + self.F * torch.arange(self.T, device=self.device)        # (B, T) frame rows
        if isinstance(self.frames, torch.Tensor):
            frames = self.frames[rows]
        else:   # numpy memmap: read just these rows
            frames = torch.from_numpy(self.frames[rows.numpy().ravel()]).view(*rows.shape, *self.frames.shape[1:])
        acts = self.actions[i + torch.arange((self.T - 1) * self.F, device=self.device)]  # (B, (T-1)F, A)
        return frames.permute(0, 1, 4, 2, 3), acts.reshape(len(i), self.T - 1, -1)

    def sample(self, batch, generator=None, rank=0, ranks=1):
        """`batch` clips at random. Under torchrun, every rank draws the same batch * ranks clips (the batch
        one process would draw) and keeps its share: ranks x `batch` equal one process with batch x ranks."""
        idx = torch.randint(len(self), (batch * ranks,), generator=generator, device=self.device)
        return self.get(idx[rank * batch:(rank + 1) * batch])


# -----------------------------------------------------------------------------
# Diagnostics: when planning fails, is it seeing (probe), predicting (rollout error) or ranking (cost order)?


def r2(y, guess):    # per column: 1 - squared error / variance (1 perfect, 0 no better than the mean)
    return 1 - ((y - guess) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def ridge_r2(x_fit, y_fit, x_test, y_test, alpha=1e-3):
    """R^2 per column of y_test of the ridge regression of y on standardised x, fit on (x_fit, y_fit)."""
    mx, sx, my = x_fit.mean(0), x_fit.std(0) + 1e-8, y_fit.mean(0)
    X = (x_fit - mx) / sx
    W = np.linalg.solve(X.T @ X + alpha * len(X) * np.eye(X.shape[1]), X.T @ (y_fit - my))
    return r2(y_test, (x_test - mx) / sx @ W + my)


def neighbours_r2(x_fit, y_fit, x_test, y_test, k=5):
    """R^2 per column of y_test of the mean y of each test row's k nearest fit rows (plain Euclidean distance,
    as the planning cost's): whether x holds y at all, linearly or not."""
    d = (x_test ** 2).sum(1)[:, None] - 2 * x_test @ x_fit.T + (x_fit ** 2).sum(1)
    return r2(y_test, y_fit[np.argpartition(d, k, axis=1)[:, :k]].mean(1))


@torch.no_grad()
def embed(model, frames, batch=256):   # (N, H, W, 3) uint8 -> (N, D) float64 numpy
    device = next(model.parameters()).device
    return torch.cat([model.encode(torch.as_tensor(np.asarray(frames[i:i + batch]), device=device)
                                   .permute(0, 3, 1, 2)[:, None])[:, 0] for i in range(0, len(frames), batch)]
                     ).double().cpu().numpy()


def held_out_rows(ds, n, after, rng, held=True):
    """n random rows of held-out (or training) episodes with at least `after` more rows in their episode."""
    fit, test = split_episodes(len(ds.episodes) - 1)
    rows = np.concatenate([np.arange(ds.episodes[e], ds.episodes[e + 1] - after) for e in (test if held else fit)])
    return np.sort(rng.choice(rows, min(n, len(rows)), replace=False))


def probe(model, ds, rows=2000, seed=0):
    """Probes of what the frames show (env.observables: positions, angles as sin and cos): ridge regression
    from frozen embeddings, fit on frames of training episodes, scored on held-out ones.
    Returns R^2 per quantity (1: read off linearly; 0: no better than the mean): from the embeddings; from
    their 5 nearest neighbours among the fit frames (held at all, linearly or not: near 0 or below, the
    embeddings do not hold it); and, as a yardstick, linearly from the pixels themselves (8 x 8, averaged):
    what the pixels give linearly and the embeddings do not, the encoder has not learned. Then each quantity's
    spread (standard deviation) over the held-out frames: a probe's RMS error, in the world's own units to set
    beside the success tolerance, is sqrt(1 - R^2) times it (`probe_rms`)."""
    env, rng = make_env(ds.meta["env"], ds.meta["img"]), np.random.default_rng(seed)
    fit, test = held_out_rows(ds, rows, 0, rng, held=False), held_out_rows(ds, rows, 0, rng)
    (names, y_fit), y_test = env.observables(ds.states[fit]), env.observables(ds.states[test])[1]
    pixels = lambda rows: F.adaptive_avg_pool2d(torch.from_numpy(ds.frames[rows]).permute(0, 3, 1, 2).double(),
                                                8).flatten(1).numpy()
    z_fit, z_test = embed(model, ds.frames[fit]), embed(model, ds.frames[test])
    r2s = (ridge_r2(z_fit, y_fit, z_test, y_test), neighbours_r2(z_fit, y_fit, z_test, y_test),
           ridge_r2(pixels(fit), y_fit, pixels(test), y_test))
    return [dict(zip(names, r.tolist())) for r in (*r2s, y_test.std(0))]


def probe_rms(r2, spread):   # a probe's RMS error in the quantity's own units, from its R^2 and the spread (`probe`)
    return {k: math.sqrt(1 - v) * spread[k] for k, v in r2.items()}


@torch.no_grad()
def prediction_quality(model, ds, starts=50, blocks=5, candidates=16, seed=0):
    """From held-out starts with `blocks` action blocks of data after them:
    rollout_error[k]: squared error of the embedding predicted k+1 blocks ahead (predictions fed back) against
        the encoded true frame, relative to the embeddings' variance: 0 is perfect, 1 no better than their mean;
    ranking: for `candidates` plans per start (the data's own actions, noisy versions of them, random ones), the
        fraction of pairs that the planning cost (the distance of the last predicted embedding to the encoded
        goal frame, the data's frame `blocks` blocks later) orders as the simulator's distance to the goal state;
    ranking_by: the same, against each part of the state's distance to the goal's (`rankings`);
    error_by_plan: the error `blocks` ahead (as rollout_error's last) of each plan against the encoded frame of
        where it truly ends, for the data's own actions, the noisy versions and the random plans. A planner tries
        plans unlike the data: where the model is much worse on those, the plans it picks are its errors."""
    env, rng = make_env(ds.meta["env"], ds.meta["img"]), np.random.default_rng(seed)
    F, A, device = model.cfg.frameskip, model.cfg.action_dim, next(model.parameters()).device
    mean, std = (np.array(ds.meta[k]) for k in ("action_mean", "action_std"))
    s = held_out_rows(ds, starts, blocks * F, rng)
    E, L = len(s), blocks * F
    z = torch.tensor(embed(model, ds.frames[(s[:, None] + F * np.arange(blocks + 1)).ravel()]),
                     dtype=torch.float32, device=device).view(E, blocks + 1, -1)            # (E, blocks+1, D)
    blocks_of = lambda raw: torch.tensor((raw - mean) / std, dtype=torch.float32, device=device).reshape(
        *raw.shape[:-2], blocks, F * A)                                                     # (..., L, A) -> (..., blocks, F*A)
    data = ds.actions[s[:, None] + np.arange(L)]                                            # (E, L, A) raw
    z_hat = model.rollout(z[:, :1], blocks_of(data))                                        # (E, blocks+1, D)
    spread = (z - z.mean((0, 1))).pow(2).sum(-1).mean()
    rollout_error = ((z_hat - z) ** 2).sum(-1).mean(0)[1:] / spread
    # candidates: the data's actions, then noisier and noisier versions, then uniform random plans
    noise = np.linspace(0.0, 1.0, candidates - 3)[:, None, None] * rng.normal(size=(E, candidates - 3, L, A))
    plans = np.concatenate([np.clip(data[:, None] + noise, -1, 1), rng.uniform(-1, 1, (E, 3, L, A))], 1)
    ends = np.array([[env.play(ds.states[i], p) for p in ps] for i, ps in zip(s, plans)])  # (E, C, S) simulated
    last = model.rollout(z[:, :1].repeat_interleave(candidates, 0), blocks_of(plans).flatten(0, 1))[:, -1]
    cost = (last.view(E, candidates, -1) - z[:, -1:]).pow(2).sum(-1).cpu().numpy()          # (E, C)
    ranking, ranking_by = rankings(env, cost, ends, ds.states[s + L])
    seen = torch.tensor(embed(model, np.stack([env.render_state(end) for end in ends.reshape(E * candidates, -1)])),
                        dtype=torch.float32, device=device)                                 # (E*C, D) true ends
    error = ((last - seen) ** 2).sum(-1).view(E, candidates) / spread                       # (E, C)
    groups = ("data", 0), ("noisy", slice(1, -3)), ("random", slice(-3, None))   # the candidates, as drawn above
    return dict(rollout_error=rollout_error.tolist(), ranking=ranking, ranking_by=ranking_by,
                error_by_plan={k: float(error[:, c].mean()) for k, c in groups})


def agreement(cost, true):
    """(E, C) each: the fraction of pairs of plans of a row that `cost` orders as `true` does (ties in `true`,
    within a billionth, left out; nan where all are ties)."""
    i, j = np.triu_indices(cost.shape[1], 1)
    differ = np.abs(true[:, i] - true[:, j]) > 1e-9 * np.maximum(np.abs(true[:, i]), np.abs(true[:, j]))
    agree = np.sign(cost[:, i] - cost[:, j]) == np.sign(true[:, i] - true[:, j])
    return float(agree[differ].mean()) if differ.any() else float("nan")


def rankings(env, cost, ends, goals):
    """How often a cost (E, C) of plans orders them as the world's distance from where they end (E, C, S) to
    the goal (E, S) does (its success test's), and as each part of the state's alone (env.parts: e.g. the
    cube's gripper and the cube): the parts say which one the cost follows."""
    see = lambda states: env.observables(states.reshape(-1, states.shape[-1]))[1].reshape(*states.shape[:-1], -1)
    gap = see(ends) - see(goals)[:, None]                                                   # (E, C, P)
    true = np.array([[env.distance(end, goal) for end in row] for row, goal in zip(ends, goals)])
    return agreement(cost, true), {part: agreement(cost, np.linalg.norm(gap[..., cols], axis=-1))
                                   for part, cols in env.parts.items()}

# -----------------------------------------------------------------------------
# Devices, checkpoints and errors for the scripts


def excepthook(kind, err, tb, default=sys.excepthook):
    """Bad input, a failed collection worker and Ctrl-C end a script with one line, not a traceback."""
    if isinstance(err, (InputError, ChildProcessError)):
        print(f"error: {err}", file=sys.stderr)
    elif isinstance(err, KeyboardInterrupt):
        print(f"interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
    else:
        default(kind, err, tb)


def number(kind, low, above=False):
    """An argparse type: a finite `kind` (int or float) at least `low`, or above it."""
    def parse(text):
        x = kind(text)
        if not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if x < low or (above and x == low):
            raise argparse.ArgumentTypeError(f"{text} is not {'above' if above else 'at least'} {low}")
        return x
    parse.__name__ = kind.__name__   # argparse names the type in "invalid int value"
    return parse


def default_device():
    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def parse_plain(parser):
    """Parse the flags; argparse's errors, bad input and Ctrl-C print one line (no usage block, no traceback)."""
    def error(message):
        print(f"error: {message} (--help lists the flags)", file=sys.stderr)
        raise SystemExit(2)
    parser.error = error
    sys.excepthook = excepthook
    return parser.parse_args()


def parse_args(parser):
    """The scripts' common start: parse the flags, print bad input as one line, check --env, pick the
    device (cuda, then mps, then cpu); bf16 is on by default on CUDA and on CPUs with native bf16, compile
    on CUDA (a CPU script decides by the length of its run)."""
    args = parse_plain(parser)
    if args.env not in PRESETS:
        parser.error(f"unknown environment {args.env!r}: choose one of {', '.join(PRESETS)}")
    try:
        args.device = torch.device(args.device or default_device())
    except RuntimeError:
        raise InputError(f"unknown device {args.device!r}: use cuda, mps or cpu") from None
    kind = args.device.type
    count = {"cuda": torch.cuda.device_count, "mps": lambda: int(torch.backends.mps.is_available())}.get(kind)
    if kind not in ("cpu", "cuda", "mps") or (count and count() <= (args.device.index or 0)):
        raise InputError(f"--device {args.device}: no such device here (this machine has: "
                         f"{default_device()}); leave --device out to use the best one")
    if args.bf16 is None:
        args.bf16 = kind == "cuda" or (kind == "cpu" and cpu_has_bf16())
    if args.compile is None and kind != "cpu":
        args.compile = kind == "cuda"      # on a CPU the script decides: compiling pays back on long runs only
    return args


def writable(path, flag):
    """Fail now, not after the work, if `path` cannot be written: try a file in its nearest existing folder
    (creating nothing: `atomic` makes the missing folders when the file is written)."""
    if os.path.isdir(path):
        raise InputError(f"cannot write {path}: it is a folder; pass a file's name as {flag}")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    why = "a file stands where its directory should be"
    if os.path.isdir(folder):
        try:
            tempfile.TemporaryFile(dir=folder).close()
            return path
        except OSError as e:
            why = e.strerror
    raise InputError(f"cannot write {path} ({why}): pass another {flag}")


@contextmanager
def atomic(path):
    """Write to a temporary name beside `path` and rename it when the block completes: an interrupted
    write never leaves a partial file at `path` (and never replaces a good one)."""
    tmp = f"{path}.tmp{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cpu_has_bf16():
    """Whether this CPU multiplies bf16 matrices natively (x86's AVX512-BF16 or AMX, Arm's BF16): only
    then does bf16 beat fp32 on it; elsewhere it is emulated. Read from Linux's /proc/cpuinfo (False
    elsewhere: --bf16 forces it)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@contextmanager
def precision(device, bf16):
    """Where the fast path computes: bf16 autocast, and on a CPU attention written out (`Attention`): the
    fused CPU kernel's bf16 backward costs more than the bf16 matmuls save (measured: 4x its fp32 time),
    and PyTorch's plain one copies more than it computes on the predictor's 3 tokens (README)."""
    if not bf16:
        yield
        return
    keep, Attention.written_out = Attention.written_out, device.type == "cpu"
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        Attention.written_out = keep


def join_ranks(device):
    """Under torchrun: join its process group (NCCL on CUDA GPUs, one per process; gloo on CPUs).
    Returns (rank, ranks, device); (0, 1, device) in a plain run."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device(device.type, int(os.environ["LOCAL_RANK"]))   # one GPU per process
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise InputError(f"torchrun runs on CUDA GPUs or on CPUs, not on {device.type}: pass --device cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(dist.destroy_process_group)
    return dist.get_rank(), dist.get_world_size(), device


def mean_over_ranks(x):
    """The mean of x over torchrun's ranks (x itself in a plain run)."""
    if world()[1] > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world()[1]
    return x


def gather(obj):
    """Every rank's `obj` in rank order, on every rank ([obj] in a plain run)."""
    if world()[1] == 1:
        return [obj]
    out = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def synchronize(device):
    """Wait for queued GPU work, so that a host clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def save_checkpoint(path, **state):
    """torch.save, atomically: an interrupted save leaves the previous checkpoint in place."""
    with atomic(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path, env="twoRoom"):
    """Load a checkpoint written by train.py (weights only: no pickled code runs); if there is none, say how
    to train one for `env`."""
    if not os.path.isfile(path):
        out = "" if path == f"runs/{env}.pt" else f" --out {path}"
        raise InputError(f"no checkpoint at {path}: train one with `python train.py --env {env}{out}`, or pass --ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path} is not a readable checkpoint ({type(e).__name__}): delete it and train again") from None
    missing = {"model", "config", "step", "env", "action_mean", "action_std"} - set(ckpt if isinstance(ckpt, dict) else ())
    if missing:
        raise InputError(f"{path} is not a subjepa checkpoint (missing {', '.join(sorted(missing))}): train again")
    was, now = ckpt.get("world", 1), getattr(WORLDS.get(ckpt["env"]), "version", 1)
    if was != now:
        raise InputError(f"{path} was trained in version {was} of the {ckpt['env']} world, this code's is version "
                         f"{now}: train it again")
    return ckpt


def load_weights(model, ckpt, path):
    """Put a checkpoint's weights into `model`; one that another version of the model wrote is refused."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        why = " ".join(str(e).split("\n\t")[1:2])[:150]
        raise InputError(f"{path} holds another version's model ({why}...): train it again with this version") from None


def load_model(path, device="cpu", env="twoRoom"):
    """The world model of a checkpoint, in eval mode, with its checkpoint dict."""
    ckpt = load_checkpoint(path, env)
    model = JEPA(Config(**ckpt["config"]))
    load_weights(model, ckpt, path)
    return model.to(device).eval(), ckpt


def bench_regularizer(which, K=32, B=128, T=4, M=1024):
    """Peak memory of one forward + backward of the subspace statistic, memory-safe or plain. Run each
    in a fresh process (`python subjepa.py --bench-reg safe|naive`): peak RSS on a CPU, allocator on CUDA."""
    import resource
    device = torch.device(default_device())
    torch.manual_seed(0)                     # the same z and directions for both: the losses must agree
    reg = SubspaceSIGReg(192, K, num_proj=M).to(device)
    z = torch.randn(T, B, 192, device=device, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024                      # MiB
    t0 = time.perf_counter()
    if which == "safe":
        loss = reg(z)
    else:
        loss = epps_pulley_reference(reg.project(z), reg.t, reg.w, reg.phi).mean()
    loss.backward()
    synchronize(device)
    ms = 1000 * (time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    print(f"{which:5s} K={K} B={B} T={T} M={M} on {device}: peak {peak:.0f} MiB, {ms:.0f} ms forward + backward, "
          f"loss {loss.item():.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="subjepa's environments and regularizer: benchmarks, picture, datasets")
    parser.add_argument("--bench", action="store_true", help="frames per second and data coverage per env")
    parser.add_argument("--bench-reg", choices=["safe", "naive"], help="peak memory of the subspace regularizer at K=32, B=128")
    parser.add_argument("--sheet", default=None, help="write the environments' picture to this PNG")
    parser.add_argument("--collect", default=None, choices=ENVS, help="collect this env's dataset into --out")
    parser.add_argument("--out", default=None, help="dataset directory for --collect")
    parser.add_argument("--episodes", type=number(int, 1), default=None, help="episodes (default: DATA_DEFAULTS)")
    parser.add_argument("--steps", type=number(int, 1), default=None, help="steps per episode (default: DATA_DEFAULTS)")
    parser.add_argument("--img", type=number(int, 8), default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--workers", type=number(int, 1), default=None, help="worker processes (default: all cores)")
    args = parse_plain(parser)
    if args.bench_reg:
        bench_regularizer(args.bench_reg)
    if args.bench:
        for name in ENVS:
            n, eps, t0 = 0, [], time.perf_counter()
            while time.perf_counter() - t0 < 3.0 or len(eps) < 100:  # at least 3 s and 100 episodes
                eps.append(_episode((name, args.img, 100, 12345, len(eps), False))[2])  # training episodes
                n += 100
            fps = n / (time.perf_counter() - t0)
            states = np.concatenate(eps)
            cov = coverage(name, states, np.arange(0, len(states) + 1, 101))
            print(f"{name:8s} {fps:7.0f} fps (step + render + policy, one process) | "
                  + ", ".join(f"{k}: {v:.3g}" for k, v in cov.items()))
    if args.sheet:
        envs_sheet(args.sheet, args.img)
    if args.collect:
        t0 = time.time()
        out = args.out or f"data/{args.collect}-{args.img}px"   # where train.py looks
        print(f"collecting {args.collect} into {out}")
        collect(args.collect, out, args.episodes, args.steps, args.img, args.seed, args.workers)
        print(f"collected {args.collect} in {time.time() - t0:.0f} s")
