"""
subjepa: JEPA world models that learn from pixels and plan with them, in one file.

Two papers, one model. LeWorldModel (LeWM, arXiv 2603.19312) trains a ViT encoder and an
action-conditioned predictor end to end with a next-embedding loss plus SIGReg, a test that pushes
the embeddings towards an isotropic Gaussian (from LeJEPA, arXiv 2511.08544). Sub-JEPA
(arXiv 2605.09241) keeps everything and applies the same test inside K frozen random subspaces.

    frames (B,T,3,H,W) -> encoder+projector -> z (B,T,D) -> predictor(z[:, :-1], a) -> z_hat (B,T-1,D)
    loss = mse(z_hat, z[:, 1:]) + lambda * Reg(z)        Reg = SIGReg (K=0) or SubspaceSIGReg (K>0)

Planning: encode the current and the goal frame, roll the predictor out over H action blocks and let
CEM pick the blocks whose last predicted embedding lands nearest the goal's.

Shape letters used everywhere:
    B batch   T frames (time)   N patches   D embedding (192)   A raw action dim   F frameskip
    K subspaces (d = D/K each)  M random directions   S CEM samples   E planning problems   H horizon
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

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


# What differs between the four worlds: the action size and the paper's number of subspaces.
PRESETS = {
    "twoRoom": dict(action_dim=2, subspaces=32),
    "pushT": dict(action_dim=2, subspaces=16),
    "reacher": dict(action_dim=2, subspaces=32),
    "cube": dict(action_dim=5, subspaces=32),
}

# -----------------------------------------------------------------------------
# Transformer pieces, shared by the encoder and the predictor


class Attention(nn.Module):
    def __init__(self, dim, heads, head_dim, causal=False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, h, T, hd)
        # fused kernel for softmax(q k^T / sqrt(hd) + causal mask) v
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    """Pre-norm transformer block. With `adaln`, a condition c sets shift, scale and gate of both
    branches (AdaLN-zero, as in DiT); the gates start at zero so the block starts as the identity."""

    def __init__(self, dim, heads, head_dim, mlp, causal=False, dropout=0.0, adaln=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not adaln)
        self.attn = Attention(dim, heads, head_dim, causal)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not adaln)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))
        self.drop = nn.Dropout(dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if adaln else None

    def forward(self, x, c=None):
        if self.ada is None:
            x = x + self.drop(self.attn(self.norm1(x)))
            return x + self.drop(self.mlp(self.norm2(x)))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # 6 x (B, T, D)
        x = x + gate1 * self.drop(self.attn(self.norm1(x) * (1 + scale1) + shift1))
        return x + gate2 * self.drop(self.mlp(self.norm2(x) * (1 + scale2) + shift2))


def projector(dim, hidden):
    """Linear -> BatchNorm -> GELU -> Linear. Without it the ViT's final LayerNorm, which pins every
    embedding to a sphere, would fight the Gaussian regularizer."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, dim))

# -----------------------------------------------------------------------------
# ViT encoder


class Encoder(nn.Module):
    """ViT: patchify, add a CLS token and learned positions, transformer, LayerNorm; returns CLS."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.img % cfg.patch:
            raise ValueError(f"image size {cfg.img} is not a multiple of the patch size {cfg.patch}")
        n = (cfg.img // cfg.patch) ** 2
        self.patchify = nn.Conv2d(3, cfg.dim, cfg.patch, stride=cfg.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.enc_heads, cfg.dim // cfg.enc_heads, cfg.enc_mlp)
                                    for _ in range(cfg.enc_layers))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, x):                                  # (B, 3, H, W) in [-1, 1]
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

    def forward(self, z, a):               # z (B, T, D), a (B, T, F*A) with T <= history
        c = self.action_encoder(a)         # (B, T, D)
        x = z + self.pos[:, :z.shape[1]]
        for block in self.blocks:
            x = block(x, c)
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
    """Epps-Pulley statistic of each column of h, as `epps_pulley_reference` but memory-safe.
    The plain version holds a (..., B, M, knots) tensor and autograd keeps several more of them: at
    K=32 subspaces, B=128, T=4, M=1024 each is ~285M floats. Here we loop over the knots and write the
    gradient by hand,
        d/dh_b = 2 sum_k w_k t_k (S_k cos(t_k h_b) - (C_k - phi_k) sin(t_k h_b)),
    so nothing larger than h itself is ever stored."""

    @staticmethod
    def forward(ctx, h, t, w, phi):
        C = torch.stack([torch.cos(tk * h).mean(-2) for tk in t], -1)  # (..., M, knots) real part
        S = torch.stack([torch.sin(tk * h).mean(-2) for tk in t], -1)  # (..., M, knots) imaginary part
        ctx.save_for_backward(h, t, w, phi, C, S)
        return h.shape[-2] * (((C - phi) ** 2 + S ** 2) @ w)

    @staticmethod
    def backward(ctx, g):                  # g (..., M)
        h, t, w, phi, C, S = ctx.saved_tensors
        a = (2 * w * t * S).unsqueeze(-3)              # (..., 1, M, knots)
        b = (2 * w * t * (C - phi)).unsqueeze(-3)
        grad = sum(a[..., k] * torch.cos(t[k] * h) - b[..., k] * torch.sin(t[k] * h) for k in range(len(t)))
        return grad * g.unsqueeze(-2), None, None, None


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

    def directions(self, dim, device, lead=()):
        A = torch.randn(*lead, dim, self.num_proj, device=device)
        return A / A.norm(dim=-2, keepdim=True)            # (..., dim, M) unit columns

    def project(self, z):                                  # (T, B, D) -> (T, B, M)
        return z @ self.directions(z.shape[-1], z.device)

    def forward(self, z):
        # the statistic takes 17 cosines of t*h with t up to 3: bf16's 8 bits are not enough
        with torch.autocast(z.device.type, enabled=False):
            h = self.project(z.float())
            return EppsPulley.apply(h, self.t, self.w, self.phi).mean()


class SubspaceSIGReg(SIGReg):
    """Sub-JEPA: the same test, inside K frozen random d-dimensional subspaces (d = D/K). Each row
    block P_k is an orthonormal basis drawn once from `seed` and never trained or redrawn; the M
    directions are drawn inside each subspace every step. K=1 is a random rotation of global SIGReg."""

    def __init__(self, dim, subspaces, num_proj=1024, knots=17, seed=0):
        super().__init__(num_proj, knots)
        if subspaces < 1 or dim % subspaces:
            raise ValueError(f"--subspaces {subspaces} does not divide the embedding width {dim}: "
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
        self.apply(self._init_weights)
        for block in self.predictor.blocks:   # AdaLN-zero: the modulation starts at 0, so gates are 0
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)

    @staticmethod
    def _init_weights(m):
        # ViT-style: small truncated-normal weights, zero biases; positions and CLS likewise
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (Encoder, Predictor)):
            nn.init.trunc_normal_(m.pos, std=0.02)
            if isinstance(m, Encoder):
                nn.init.trunc_normal_(m.cls, std=0.02)

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
        z = self.projector(self.encoder(x * 2 - 1))        # (B*T, D)
        return z.view(B, T, -1)                            # (B, T, D)

    def predict(self, z, a):               # z (B, T, D), a (B, T, F*A) -> prediction of frames 1..T
        B, T, D = z.shape
        return self.pred_proj(self.predictor(z, a).flatten(0, 1)).view(B, T, D)

    def rollout(self, z, actions):
        """Autoregressive prediction feeding its own outputs back. z (B, T0, D) are known embeddings,
        actions (B, T, F*A) with T >= T0 hold the block taken after each frame; returns (B, T+1, D):
        the T0 given embeddings followed by T+1-T0 predicted ones."""
        for t in range(z.shape[1], actions.shape[1] + 1):
            ctx = z[:, -self.cfg.history:]                 # the last <= 3 frames
            nxt = self.predict(ctx, actions[:, t - ctx.shape[1]:t])[:, -1:]  # (B, 1, D)
            z = torch.cat([z, nxt], 1)
        return z

    def loss(self, frames, actions):
        """frames (B, T, 3, H, W), actions (B, >=T-1, F*A) z-scored -> (total, prediction, regularizer).
        No stop-gradient and no target network: the encoder learns through both sides."""
        z = self.encode(frames)                            # (B, T, D)
        z_hat = self.predict(z[:, :-1], actions[:, :z.shape[1] - 1])  # (B, T-1, D)
        pred = F.mse_loss(z_hat.float(), z[:, 1:].float())
        reg = self.reg(z.transpose(0, 1))                  # (T, B, D): one test per time index
        return pred + self.cfg.lam * reg, pred, reg

    @torch.no_grad()
    def plan(self, obs, goal, horizon=5, generator=None, **cem_kwargs):
        """CEM over `horizon` action blocks for E problems at once: obs, goal frames (E, 3, H, W) ->
        z-scored action blocks (E, horizon, F*A) minimising |z_H - z_goal|^2 after the rollout."""
        z0 = self.encode(obs[:, None])                     # (E, 1, D)
        zg = self.encode(goal[:, None])                    # (E, 1, D)

        def cost(a):                                       # (E, S, H, F*A) -> (E, S)
            E, S = a.shape[:2]
            z = self.rollout(z0.repeat_interleave(S, 0), a.flatten(0, 1))[:, -1]  # (E*S, D)
            return (z.view(E, S, -1) - zg).float().pow(2).sum(-1)

        shape = (len(obs), horizon, self.cfg.frameskip * self.cfg.action_dim)
        return cem(cost, shape, generator=generator, device=obs.device, **cem_kwargs)

# -----------------------------------------------------------------------------
# Cross-entropy method


@torch.no_grad()
def cem(cost, shape, samples=300, elites=30, iters=30, generator=None, device=None):
    """Minimise cost over plans for E problems together. shape = (E, *plan_shape); cost maps
    candidates (E, S, *plan_shape) to (E, S). Sample around a Gaussian, refit it to the best
    `elites`, repeat; return the final mean (E, *plan_shape). Sample 0 is always the current mean."""
    device = device or (generator.device if generator is not None else "cpu")
    E, *plan_shape = shape
    mean = torch.zeros(E, math.prod(plan_shape), device=device)   # (E, P)
    std = torch.ones_like(mean)
    for _ in range(iters):
        x = mean[:, None] + std[:, None] * torch.randn(E, samples, mean.shape[1], device=device, generator=generator)
        x[:, 0] = mean                                               # (E, S, P)
        c = cost(x.view(E, samples, *plan_shape))                    # (E, S)
        best = c.topk(elites, dim=1, largest=False).indices          # (E, elites)
        elite = x.gather(1, best[..., None].expand(-1, -1, x.shape[2]))
        mean, std = elite.mean(1), elite.std(1)
    return mean.view(shape)
