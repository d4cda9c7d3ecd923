"""FGSM / PGD / MIM and the noise control: budget, clipping, determinism, exact gradient oracles, PGD beats noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from malleability.empirics.attacks import ATTACK_NAMES, PAPER_ATTACKS, check_options, default_loss, make_attack
from malleability.empirics.attacks.fgsm import FGSM
from malleability.empirics.attacks.mim import MIM
from malleability.empirics.attacks.noise import Noise
from malleability.empirics.attacks.pgd import PGD
from malleability.errors import MalleabilityError


def linear_model(d=12, k=4, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(d, k, generator=gen, dtype=torch.float64).to(dtype)

    def model_fn(x):
        return x.to(W.dtype) @ W * 3.0

    return model_fn, W


def batch(n=16, d=12, k=4, seed=1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randint(0, k, (n,), generator=gen)
    return x, y


@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.5])
def test_budget_clipping_dtype(name, dtype, eps):
    model_fn, _ = linear_model(dtype=dtype)
    x, y = batch(dtype=dtype)
    x_adv = make_attack(name, eps, seed=3)(model_fn, x, y)
    assert x_adv.dtype == dtype and x_adv.shape == x.shape
    slack = 1e-6 if dtype == torch.float32 else 1e-12
    assert float((x_adv - x).abs().max()) <= eps + slack
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if eps > 0:
        assert float((x_adv - x).abs().max()) > 0  # it does move


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_feature_space_budget_without_and_with_renormalisation(name):
    model_fn, _ = linear_model()
    x, y = batch()
    x[:, 0] = 0.0  # entries at the boundary of [0, 1]: pixel clipping would stop them going negative
    x = x / x.norm(dim=1, keepdim=True)
    raw = make_attack(name, 0.2, space="feature")(model_fn, x, y)
    assert float((raw - x).abs().max()) <= 0.2 + 1e-12
    assert float(raw[:, 0].min()) < 0.0  # no [0, 1] clipping in feature space
    pixel = make_attack(name, 0.2, space="pixel")(model_fn, x, y)
    assert float(pixel[:, 0].min()) >= 0.0
    unit = make_attack(name, 0.2, space="feature", renormalize=True)(model_fn, x, y)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(x.shape[0], dtype=x.dtype))


def test_fgsm_matches_the_analytic_gradient_sign():
    """Binary linear model, loss 1/2 (w.x - t)^2: d/dx = (w.x - t) w, so the step is eps sign((w.x - t) w)."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(10, 1, generator=gen, dtype=torch.float64)
    x = torch.rand(20, 10, generator=gen, dtype=torch.float64) * 0.5 + 0.25
    y = torch.randint(0, 2, (20,), generator=gen)
    t = 2.0 * y.double() - 1.0
    expected = (x + 0.2 * torch.sign(((x @ w)[:, 0] - t)[:, None] * w[:, 0][None, :])).clamp(0, 1)
    got = FGSM(eps=0.2)(lambda z: z @ w, x, y)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_one_step_pgd_and_mim_reduce_to_fgsm():
    model_fn, _ = linear_model()
    x, y = batch()
    fgsm = FGSM(eps=0.1)(model_fn, x, y)
    pgd = PGD(eps=0.1, steps=1, step_size=0.1, random_start=False)(model_fn, x, y)
    mim = MIM(eps=0.1, steps=1, decay=0.0)(model_fn, x, y)
    torch.testing.assert_close(pgd, fgsm, rtol=0, atol=0)
    torch.testing.assert_close(mim, fgsm, rtol=0, atol=0)


def test_seeded_and_deterministic():
    model_fn, _ = linear_model()
    x, y = batch()
    a = PGD(eps=0.3, steps=3, seed=5)(model_fn, x, y)
    b = PGD(eps=0.3, steps=3, seed=5)(model_fn, x, y)
    c = PGD(eps=0.3, steps=3, seed=6, step_size=1e-6)(model_fn, x, y)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def small_mlp(seed=0):
    gen = torch.Generator().manual_seed(seed)
    W1 = torch.randn(20, 32, generator=gen, dtype=torch.float64)
    W2 = torch.randn(32, 3, generator=gen, dtype=torch.float64)
    return lambda x: torch.relu(x @ W1) @ W2


def test_pgd_raises_the_loss_more_than_random_noise_of_the_same_budget():
    model_fn = small_mlp()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(64, 20, generator=gen, dtype=torch.float64) * 0.6 + 0.2
    y = model_fn(x).argmax(dim=1)  # correctly classified points: the clean loss is small
    eps = 0.1
    x_pgd = PGD(eps=eps, steps=20)(model_fn, x, y)
    noise = (torch.randint(0, 2, x.shape, generator=gen).double() * 2 - 1) * eps
    x_noise = (x + noise).clamp(0, 1)
    clean = default_loss(model_fn(x), y)
    pgd_loss = default_loss(model_fn(x_pgd), y)
    noise_loss = default_loss(model_fn(x_noise), y)
    assert pgd_loss.mean() > noise_loss.mean() > 0
    # per sample too: PGD is at least as damaging as noise on most points
    assert float((pgd_loss >= noise_loss).double().mean()) >= 0.9
    assert pgd_loss.mean() > clean.mean()


def test_attack_does_not_touch_model_parameters():
    layer = torch.nn.Linear(12, 4).double()
    x, y = batch()
    MIM(eps=0.1)(layer, x, y)
    assert layer.weight.grad is None and layer.bias.grad is None


def test_params_are_recorded():
    p = PGD(eps=0.3).params()
    assert p["attack"] == "pgd" and p["steps"] == 40 and p["step_size_used"] == pytest.approx(2.5 * 0.3 / 40)
    m = MIM(eps=0.3).params()
    assert m["decay"] == 1.0 and m["step_size_used"] == pytest.approx(0.03)
    assert "Paper:" in PGD.__doc__ and "Shapes:" in MIM.__doc__ and "Norm:" in FGSM.__doc__


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: make_attack("cw", 0.1), "unknown attack"),
        (lambda: make_attack("pgd", -0.1), "eps"),
        (lambda: make_attack("fgsm", float("nan")), "eps"),
        (lambda: make_attack("fgsm", 0.1, space="latent"), "space"),
        (lambda: PGD(eps=0.1, steps=0), "steps"),
        (lambda: MIM(eps=0.1, decay=-1.0), "decay"),
        # NaN, inf, a fraction or a bool as a count, and an infinite step (0 * inf = NaN where the sign is 0)
        (lambda: PGD(eps=0.1, steps=float("nan")), "PGD steps must be an integer >= 1"),
        (lambda: PGD(eps=0.1, steps=2.5), "PGD steps must be an integer >= 1"),
        (lambda: MIM(eps=0.1, steps=True), "MIM steps must be an integer >= 1"),
        (lambda: PGD(eps=0.1, step_size=float("inf")), "PGD step_size must be finite"),
        (lambda: MIM(eps=0.1, decay=float("inf")), "MIM decay must be finite"),
        (lambda: check_options("pgd", {"steps": 0}), "PGD steps"),
        (lambda: check_options("pgd", {"random_start": 1}), "pgd random_start must be true or false"),
        (lambda: FGSM(eps=0.1, renormalize=True), "renormalize"),
    ],
)
def test_bad_configuration(build, match):
    with pytest.raises(MalleabilityError, match=match):
        build()


def test_bad_inputs():
    model_fn, _ = linear_model()
    x, y = batch()
    with pytest.raises(MalleabilityError, match="0, 1"):
        FGSM(eps=0.1)(model_fn, x + 1.0, y)
    with pytest.raises(MalleabilityError, match="shape"):
        FGSM(eps=0.1)(model_fn, x, y[:-1])
    with pytest.raises(MalleabilityError, match="NaN"):
        FGSM(eps=0.1)(model_fn, x * float("nan"), y)


# ---------------------------------------------------------------------------------------------
# the noise control


def test_noise_is_a_clipped_vertex_of_the_budget_ball():
    """Every coordinate moves by exactly +-eps unless clipping to [0, 1] stops it; both signs occur."""
    x, y = batch(n=64, d=30)
    eps = 0.3
    x_noise = Noise(eps=eps, seed=4)(None, x, y)
    delta = x_noise - x
    assert float(delta.abs().max()) <= eps + 1e-12
    assert float(x_noise.min()) >= 0.0 and float(x_noise.max()) <= 1.0
    room = ((x + eps <= 1) & (x - eps >= 0))  # coordinates clipping cannot touch
    assert bool(room.any())
    torch.testing.assert_close(delta[room].abs(), torch.full_like(delta[room], eps), rtol=0, atol=1e-12)
    up = float((delta[room] > 0).double().mean())
    assert 0.35 < up < 0.65  # random signs, about half each
    # the clipped coordinates are exactly the clipped +-eps move
    signs = torch.where(delta > 0, 1.0, -1.0).double()
    torch.testing.assert_close(x_noise[room], (x + eps * signs)[room], rtol=0, atol=0)
    # same size as FGSM's perturbation where nothing is clipped
    model_fn, _ = linear_model(d=30)
    fgsm_delta = FGSM(eps=eps)(model_fn, x, y) - x
    torch.testing.assert_close(fgsm_delta[room].abs(), delta[room].abs(), rtol=0, atol=1e-12)


def test_noise_is_seeded():
    x, y = batch()
    a = Noise(eps=0.2, seed=1)(None, x, y)
    b = make_attack("noise", 0.2, seed=1)(None, x, y)
    c = Noise(eps=0.2, seed=2)(None, x, y)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # float32 in, float32 out, same signs
    a32 = Noise(eps=0.2, seed=1)(None, x.float(), y)
    assert a32.dtype == torch.float32
    assert torch.equal(torch.sign(a32 - x.float()), torch.sign((a - x).float()))


def test_noise_never_consults_the_model():
    calls = []

    def model_fn(z):  # would record any forward (and so any gradient) pass
        calls.append(z.shape)
        raise AssertionError("the noise control must not call the model")

    x, y = batch()
    Noise(eps=0.1)(model_fn, x, y)
    layer = torch.nn.Linear(12, 4).double()
    Noise(eps=0.1)(layer, x, y)
    assert calls == [] and layer.weight.grad is None
    assert Noise.uses_model is False and all(make_attack(a, 0.1).uses_model for a in PAPER_ATTACKS)
    # the same output whatever the model
    model_a, _ = linear_model(seed=0)
    model_b, _ = linear_model(seed=9)
    torch.testing.assert_close(Noise(eps=0.1, seed=3)(model_a, x, y), Noise(eps=0.1, seed=3)(model_b, x, y),
                               rtol=0, atol=0)


def test_noise_is_documented_as_a_control():
    assert "noise" in ATTACK_NAMES and "noise" not in PAPER_ATTACKS
    assert "CONTROL" in Noise.__doc__ and "Paper:" in Noise.__doc__ and "Shapes:" in Noise.__doc__
    assert Noise(eps=0.3).params()["attack"] == "noise"


def test_pgd_raises_the_loss_more_than_the_noise_control():
    model_fn = small_mlp()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(64, 20, generator=gen, dtype=torch.float64) * 0.6 + 0.2
    y = model_fn(x).argmax(dim=1)
    pgd_loss = default_loss(model_fn(PGD(eps=0.1, steps=20)(model_fn, x, y)), y)
    noise_loss = default_loss(model_fn(Noise(eps=0.1, seed=5)(model_fn, x, y)), y)
    assert pgd_loss.mean() > noise_loss.mean() > 0


def test_the_edges_of_each_option_range_are_accepted():
    # decay 0 is I-FGSM (no momentum), a legitimate reading of MIM; a count given as 3.0 is 3
    assert MIM(eps=0.1, decay=0.0).decay == 0.0
    assert PGD(eps=0.1, steps=3.0).steps == 3 and isinstance(PGD(eps=0.1, steps=np.int64(3)).steps, int)
    assert check_options("mim", {"decay": 0.0, "steps": 1}) == {"decay": 0.0, "steps": 1}


@pytest.mark.parametrize("flag, value, message", [
    ("--mim-decay", "-1", "--mim-decay: MIM decay must be finite and >= 0"),
    ("--mim-steps", "0", "--mim-steps: MIM steps must be an integer >= 1"),
    ("--pgd-steps", "2.5", "--pgd-steps must be an integer, got '2.5'"),
    ("--pgd-step-size", "inf", "--pgd-step-size: PGD step_size must be finite and > 0"),
])
def test_a_cli_attack_option_out_of_range_is_one_line(flag, value, message):
    from click.testing import CliRunner

    from malleability.reports.cli import main

    res = CliRunner().invoke(main, ["flip-rate", "--dataset", "mnist", "--attack", "mim,pgd", flag, value])
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line


def test_the_cli_accepts_mim_without_momentum():
    from malleability.reports.cli_common import attack_options

    kw = {"mim__decay": "0", "mim__steps": "3", "pgd__steps": None}
    assert attack_options(kw) == {"mim": {"decay": 0.0, "steps": 3}} and kw == {}
