"""Claims about subjepa, each checked on the CPU in seconds. Run: python -m pytest -q"""
import dataclasses
import io
import math

import pytest
import torch

from subjepa import (JEPA, PRESETS, Config, EppsPulley, SIGReg, SubspaceSIGReg, cem,
                     epps_pulley_reference)


def tiny(**kw):
    """A model small enough to train in seconds on a CPU, with every part of the real one."""
    return Config(**{**dict(img=16, patch=8, dim=32, enc_layers=2, enc_heads=2, enc_mlp=64, proj_hidden=64,
                            act_hidden=32, pred_layers=2, pred_heads=2, pred_head_dim=16, pred_mlp=64,
                            num_proj=64, subspaces=4), **kw})


def expected_gaussian(reg):
    return (reg.w * (1 - torch.exp(-reg.t ** 2))).sum().item()


# -----------------------------------------------------------------------------
# SIGReg

def test_sigreg_constants_match_the_paper():
    """The quadrature gives the SPEC's constants: E[stat] = 1.0525 for N(0, I) and 0.4020 * B for a collapse."""
    reg = SIGReg()
    assert expected_gaussian(reg) == pytest.approx(1.0525, abs=1e-4)
    assert (reg.w * (1 - reg.phi) ** 2).sum().item() == pytest.approx(0.4020, abs=1e-4)


def test_sigreg_gaussian_samples_score_about_1_0525():
    """N(0, I) embeddings score about 1.0525, whatever the batch size."""
    torch.manual_seed(0)
    reg = SIGReg()
    for B in (64, 512):
        score = sum(reg(torch.randn(4, B, 192)).item() for _ in range(8)) / 8
        assert score == pytest.approx(1.0525, rel=0.06)


def test_sigreg_collapsed_batch_scores_exactly_0_4020_B():
    """An all-zero batch scores exactly B * sum_k w_k (1 - phi_k)^2 = 0.4020 * B."""
    reg = SIGReg()
    for B in (16, 128):
        exact = B * (reg.w * (1 - reg.phi) ** 2).sum().item()
        assert reg(torch.zeros(4, B, 192)).item() == pytest.approx(exact, rel=1e-6)
        assert exact == pytest.approx(0.4020 * B, rel=1e-3)


def test_sigreg_non_gaussian_samples_score_far_higher():
    """Shifted (+5), scaled (x10) and uniform U(-1, 1) samples score at least 10x a Gaussian sample."""
    torch.manual_seed(0)
    reg, z = SIGReg(), torch.randn(4, 256, 192)
    gauss = reg(z).item()
    for bad in (z + 5, z * 10, torch.rand(4, 256, 192) * 2 - 1):
        assert reg(bad).item() > 10 * gauss


def test_sigreg_sees_shape_not_only_moments():
    """In one dimension a uniform sample with the Gaussian's mean and variance still scores 10x higher.
    (In 192 dimensions random projections of it are nearly Gaussian, by the central limit theorem.)"""
    torch.manual_seed(0)
    reg = SIGReg()
    gauss = reg(torch.randn(4, 4096, 1)).item()
    assert reg((torch.rand(4, 4096, 1) * 2 - 1) * math.sqrt(3)).item() > 10 * gauss


def test_sigreg_is_non_negative_and_permutation_invariant():
    """The statistic is never negative and does not depend on the order of the batch."""
    reg, z = SIGReg(), torch.randn(4, 64, 192) * 3 + 1
    shuffled = z[:, torch.randperm(64)]
    torch.manual_seed(1)
    a = reg(z)
    torch.manual_seed(1)   # same directions
    b = reg(shuffled)
    assert a.item() >= 0 and a.item() == pytest.approx(b.item(), rel=1e-5)


def test_epps_pulley_gradient_is_exact():
    """The hand-written backward of the memory-safe statistic passes gradcheck in float64."""
    reg = SIGReg(knots=17)
    t, w, phi = reg.t.double(), reg.w.double(), reg.phi.double()
    h = torch.randn(2, 3, 16, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: EppsPulley.apply(h, t, w, phi), (h,))
    assert torch.allclose(EppsPulley.apply(h, t, w, phi), epps_pulley_reference(h, t, w, phi))

# -----------------------------------------------------------------------------
# Subspace SIGReg


def test_subspaces_have_orthonormal_rows():
    """Each P_k is a d x D matrix with orthonormal rows."""
    reg = SubspaceSIGReg(192, 32)
    assert reg.P.shape == (32, 6, 192)
    assert torch.allclose(reg.P @ reg.P.transpose(1, 2), torch.eye(6).expand(32, 6, 6), atol=1e-5)


def test_subspaces_are_frozen():
    """P gets no gradient, is saved in the state dict, survives optimizer steps and a save and load."""
    model = JEPA(tiny())
    P0 = model.reg.P.clone()
    assert "reg.P" in model.state_dict() and not model.reg.P.requires_grad
    assert all(p is not model.reg.P for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model.loss(torch.randint(0, 256, (8, 4, 3, 16, 16), dtype=torch.uint8), torch.randn(8, 3, 10))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.reg.P, P0)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = JEPA(tiny(reg_seed=123))            # different subspaces until loaded
    assert not torch.equal(other.reg.P, P0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(other.reg.P, P0)


def test_subspaces_come_from_the_seed():
    """The same seed gives the same subspaces, another seed others."""
    assert torch.equal(SubspaceSIGReg(192, 16, seed=3).P, SubspaceSIGReg(192, 16, seed=3).P)
    assert not torch.equal(SubspaceSIGReg(192, 16, seed=3).P, SubspaceSIGReg(192, 16, seed=4).P)


def test_one_subspace_is_global_sigreg():
    """K=1 scores like the global SIGReg: exactly on a collapse, within noise on Gaussian and anisotropic data."""
    glob, one = SIGReg(), SubspaceSIGReg(192, 1)
    assert one(torch.zeros(4, 32, 192)).item() == pytest.approx(glob(torch.zeros(4, 32, 192)).item(), rel=1e-6)
    torch.manual_seed(0)
    scales = torch.linspace(0.3, 2.0, 192)                 # not isotropic: the rotation matters
    for z in (torch.randn(4, 256, 192), torch.randn(4, 256, 192) * scales):
        g = sum(glob(z).item() for _ in range(10)) / 10
        o = sum(one(z).item() for _ in range(10)) / 10
        assert o == pytest.approx(g, rel=0.1)


def test_subspaces_must_divide_the_embedding():
    """A K that does not divide D is refused with a message that names the valid choices."""
    with pytest.raises(ValueError, match="does not divide the embedding width 192"):
        SubspaceSIGReg(192, 7)
    with pytest.raises(ValueError, match="subspaces 5"):
        JEPA(tiny(subspaces=5))


def test_memory_safe_subspace_statistic_equals_the_naive_one():
    """The knot-by-knot statistic and its gradient equal the plain (K, T, B, M, knots) computation."""
    reg = SubspaceSIGReg(192, 32, num_proj=128)
    z = (torch.randn(4, 32, 192) * 1.5 + 0.3).requires_grad_()
    torch.manual_seed(7)
    safe = reg(z)
    (g_safe,) = torch.autograd.grad(safe, z)
    torch.manual_seed(7)   # the same directions, drawn by the same call
    A = reg.directions(6, z.device, (32, 1))
    h = torch.einsum("kjd,tbd->ktbj", reg.P, z) @ A
    naive = epps_pulley_reference(h, reg.t, reg.w, reg.phi).mean()
    (g_naive,) = torch.autograd.grad(naive, z)
    assert safe.item() == pytest.approx(naive.item(), rel=1e-5)
    assert torch.allclose(g_safe, g_naive, rtol=1e-4, atol=1e-7)

# -----------------------------------------------------------------------------
# Predictor


def test_predictor_is_causal():
    """Changing action block t or frame t changes the predictions at t and after, never before."""
    torch.manual_seed(0)
    model = JEPA(tiny(dropout=0.0)).eval()
    for p in model.predictor.parameters():      # leave the near-identity start so that every path matters
        torch.nn.init.normal_(p, std=0.2)
    z, a = torch.randn(2, 3, 32), torch.randn(2, 3, 10)
    base = model.predict(z, a)
    scale = base.abs().max()
    for t in range(3):
        a2, z2 = a.clone(), z.clone()
        a2[:, t] += torch.randn(2, 10)             # not a constant: LayerNorm would erase that
        z2[:, t] += torch.randn(2, 32)
        for out in (model.predict(z, a2), model.predict(z2, a)):
            change = (out - base).abs().amax(dim=(0, 2))          # (T,) largest change per position
            assert (change[:t] < 1e-6 * scale).all() and (change[t:] > 1e-3 * scale).all()


def test_adaln_zero_blocks_start_as_identity():
    """At initialisation every AdaLN-zero block returns its input unchanged, whatever the condition."""
    model = JEPA(tiny())
    x, c = torch.randn(2, 3, 32), torch.randn(2, 3, 32)
    for block in model.predictor.blocks:
        assert torch.equal(block(x, c), x)


def test_rollout_feeds_predictions_back():
    """rollout keeps the given embeddings and appends, one by one, what predict gives on the last 3."""
    torch.manual_seed(0)
    model = JEPA(tiny(dropout=0.0)).eval()
    z0, a = torch.randn(2, 1, 32), torch.randn(2, 5, 10)
    z = model.rollout(z0, a)
    assert z.shape == (2, 6, 32) and torch.equal(z[:, :1], z0)
    assert torch.allclose(z[:, 4], model.predict(z[:, 1:4], a[:, 1:4])[:, -1], atol=1e-6)


def test_paper_configuration_has_about_18M_parameters():
    """ViT-tiny (5.5M) + predictor (10.8M) + projectors (1.6M): about 18M, at 64 px and at 224 px."""
    for cfg in (Config(), Config(img=224, patch=14)):
        counts = JEPA(cfg).param_counts()
        print(cfg.img, "px:", {k: f"{v / 1e6:.2f}M" for k, v in counts.items()})
        assert counts["encoder"] == pytest.approx(5.5e6, rel=0.03)
        assert counts["predictor"] == pytest.approx(10.8e6, rel=0.02)
        assert counts["projectors"] == pytest.approx(1.6e6, rel=0.02)
        assert counts["total"] == pytest.approx(18e6, rel=0.02)


def test_paper_geometry_runs():
    """224 x 224 frames with patch 14 (256 patches) go through the encoder."""
    model = JEPA(Config(img=224, patch=14, subspaces=0)).eval()
    assert model.encode(torch.zeros(1, 2, 3, 224, 224, dtype=torch.uint8)).shape == (1, 2, 192)


def test_presets_follow_the_paper():
    """Every environment has a preset; the subspace counts are the paper's (32, 16, 32, 32)."""
    assert {k: v["subspaces"] for k, v in PRESETS.items()} == {"twoRoom": 32, "pushT": 16, "reacher": 32, "cube": 32}
    for preset in PRESETS.values():
        JEPA(dataclasses.replace(tiny(), **preset))

# -----------------------------------------------------------------------------
# CEM


def test_cem_finds_the_minimum_of_a_quadratic_and_is_reproducible():
    """CEM lands on the minimum of a separable quadratic for every problem, identically for the same generator."""
    target = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.0, 1.2]]).view(2, 3, 1)   # E=2 problems, plans (3, 1)
    cost = lambda x: ((x - target[:, None]) ** 2).flatten(2).sum(-1)         # (E, S, 3, 1) -> (E, S)
    plans = [cem(cost, (2, 3, 1), generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert plans[0].shape == (2, 3, 1)
    assert torch.allclose(plans[0], target, atol=1e-2)
    assert torch.equal(plans[0], plans[1])


def test_plan_is_reproducible():
    """The model's planner returns action blocks of the right shape, the same for the same generator."""
    torch.manual_seed(0)
    model = JEPA(tiny()).eval()
    obs, goal = torch.randint(0, 256, (2, 2, 3, 16, 16), dtype=torch.uint8)
    plan = lambda: model.plan(obs, goal, generator=torch.Generator().manual_seed(0), samples=20, elites=4, iters=3)
    assert plan().shape == (2, 5, 10) and torch.equal(plan(), plan())

# -----------------------------------------------------------------------------
# Learning


def overfit(lam, steps=150):
    torch.manual_seed(0)
    model = JEPA(tiny(lam=lam, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (32, 4, 3, 16, 16), generator=g, dtype=torch.uint8)
    actions = torch.randn(32, 3, 10, generator=g)
    spread = lambda: model.encode(frames).std(0).mean().item()   # per-dimension std over the batch
    with torch.no_grad():
        start = spread()
    for _ in range(steps):
        total, pred, reg = model.loss(frames, actions)
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        return start, spread(), pred.item()


def test_regularizer_prevents_collapse_while_the_model_fits():
    """Without the regularizer the embeddings shrink towards a point; with it they spread out and the
    predictor still fits the batch (prediction error under 2% of the embeddings' variance)."""
    start, collapsed, _ = overfit(lam=0.0)
    _, spread, pred = overfit(lam=0.09)
    print(f"spread at start {start:.3f}, lambda=0 {collapsed:.3f}, lambda=0.09 {spread:.3f}; pred {pred:.4f}")
    assert collapsed < start / 2          # seen: 0.095 -> 0.017..0.032 over seeds 0-2
    assert spread > 5 * start             # seen: 0.095 -> 0.65..0.71
    assert pred < 0.02 * spread ** 2      # seen: 0.004..0.005
