"""Training loop pieces: lr schedule, EMA, gradient accumulation, batch stream, timestep sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from _train_utils import single_thread, tiny_config, write_images
from difface.diffusion.losses import training_losses
from difface.diffusion.schedule import Diffusion
from difface.distributed import DistInfo
from difface.train.config import OptimConfig, TimestepConfig
from difface.train.data import StreamSampler
from difface.train.ema import EMA
from difface.train.loop import accumulate_gradients, lr_at, train
from difface.train.run import build_dataset, build_model, build_step
from difface.train.steps import (
    StepOutput,
    TimestepSampler,
    draw_timesteps_and_noise,
    make_diffusion_step,
    make_estimator_step,
)

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


_one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


def test_warmup_values():
    o = OptimConfig(lr=1e-4, warmup_steps=10_000)
    # step k uses lr * k / warmup from the very first step (the official trainer used 1e-4 at step 1)
    assert lr_at(1, o, 800_000) == pytest.approx(1e-8)
    assert lr_at(5000, o, 800_000) == pytest.approx(5e-5)
    assert lr_at(10_000, o, 800_000) == pytest.approx(1e-4)
    assert lr_at(123_456, o, 800_000) == pytest.approx(1e-4)
    assert lr_at(1, OptimConfig(lr=3e-4), 10) == 3e-4  # no warm-up


def test_cosine_values():
    o = OptimConfig(lr=5e-5, schedule="cosine", eta_min=5e-6, cosine_steps=300_000)
    assert lr_at(1, o, 0) == pytest.approx(5e-5)  # CosineAnnealingLR epoch 0
    assert lr_at(150_001, o, 0) == pytest.approx((5e-5 + 5e-6) / 2)
    assert lr_at(300_001, o, 0) == pytest.approx(5e-6)
    assert lr_at(400_000, o, 0) == pytest.approx(5e-6)
    k = 75_000  # cos(pi/4) point, by hand: eta_min + (lr - eta_min)(1 + sqrt(2)/2)/2
    assert lr_at(k + 1, o, 0) == pytest.approx(5e-6 + 4.5e-5 * (1 + math.sqrt(0.5)) / 2)
    w = OptimConfig(lr=1e-3, schedule="cosine", eta_min=0.0, cosine_steps=100, warmup_steps=10)
    assert lr_at(5, w, 0) == pytest.approx(1e-3 * (1 + math.cos(math.pi * 4 / 100)) / 2 * 0.5)


class _Items:
    """A minimal in-memory dataset with the robust-dataset interface."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.failed, self.num_failed = x, {}, 0

    def __len__(self) -> int:
        return len(self.x)

    def item(self, index: int, epoch: int) -> torch.Tensor:
        return self.x[index]


def test_first_step_already_uses_the_warmed_up_lr(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    w0 = model.weight.detach().clone()

    def step_fn(net, batch, step):
        return StepOutput(net(batch["image"]).square().sum(1).sum(), {})

    cfg = tiny_config("prior", tmp_path, optim={"lr": 0.1, "warmup_steps": 100, "ema_rate": None},
                      max_steps=1)
    train(model, step_fn, _Items(torch.randn(8, 4)), cfg, tmp_path / "run", CPU)
    # AdamW's first update is lr * g / (|g| + eps) = +-lr for every weight with a non-zero gradient
    np.testing.assert_allclose((model.weight.detach() - w0).abs().numpy(), 0.1 / 100, rtol=1e-3)


def test_ema_update_formula():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, 2.0]))
            self.register_buffer("count", torch.tensor([3]))
            self.register_buffer("scale", torch.tensor([10.0]))

    m = M()
    ema = EMA(m, rate=0.9)
    with torch.no_grad():
        m.w.copy_(torch.tensor([2.0, 0.0]))
        m.count.fill_(7)
        m.scale.fill_(20.0)
    ema.update(m)
    # 0.9 * old + 0.1 * new, by hand; integer buffers copied
    torch.testing.assert_close(ema.shadow.w.data, torch.tensor([1.1, 1.8]))
    assert ema.shadow.count.item() == 7
    torch.testing.assert_close(ema.shadow.scale, torch.tensor([11.0]))
    ema.update(m)
    torch.testing.assert_close(ema.shadow.w.data, torch.tensor([0.9 * 1.1 + 0.2, 0.9 * 1.8]))
    assert not ema.shadow.w.requires_grad and not ema.shadow.training
    with pytest.raises(ValueError):
        EMA(m, rate=1.0)


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def prior_setup(tmp_path_factory):
    folder = write_images(tmp_path_factory.mktemp("imgs"), 8)
    cfg = tiny_config("prior", folder)
    ds = build_dataset(cfg)
    batch = {"image": torch.stack([ds.item(i, 0) for i in range(8)]), "slot": torch.arange(8),
             "skipped": torch.zeros(8, dtype=torch.long)}
    return cfg, batch


def test_gradient_accumulation_equals_full_batch_gradient(prior_setup):
    cfg, batch = prior_setup
    step_fn = build_step(cfg)
    # Independent reference: the mean hybrid loss of the whole batch with the same keyed draws.
    ref = build_model(cfg)
    t, noise = draw_timesteps_and_noise(TimestepSampler(cfg.diffusion), cfg.seed, 1, batch["slot"],
                                        (3, 32, 32), torch.device("cpu"))
    training_losses(ref, Diffusion.create(1000, "linear", ""), batch["image"], t, noise)["loss"].mean().backward()
    expected = _grads(ref)
    for micro in (8, 4, 3):  # 3: uneven micro-batches 3 + 3 + 2
        model = build_model(cfg)
        accumulate_gradients(model, step_fn, batch, 1, micro_batch=micro)
        for g, e in zip(_grads(model), expected):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_one_step_micro_8_equals_micro_4x2(prior_setup, tmp_path):
    cfg, _ = prior_setup
    states = {}
    for micro in (8, 4):
        c = tiny_config("prior", cfg.data.folder, optim={"micro_batch": micro}, max_steps=1)
        states[micro] = train(build_model(c), build_step(c), build_dataset(c), c, tmp_path / f"m{micro}", CPU)
    a, b = (states[m].optimizer.state_dict()["state"] for m in (8, 4))
    for k in a:  # Adam moments: 0.1 g and 0.001 g^2, with the gradient tolerance of the test above
        torch.testing.assert_close(a[k]["exp_avg"], b[k]["exp_avg"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"], rtol=1e-4, atol=1e-10)
    # Step 1 moves every weight by about lr_1 = 1e-3 / 2 (Adam: lr g / (|g| + eps)). Rounding
    # differences in g matter only where |g| is near or below eps = 1e-8 (weights behind the
    # zero-initialised layers get such tiny gradients at step 1), so: every weight within 5% of
    # lr_1, and 99.9% of the ~760k weights within 1e-8.
    d = torch.cat([(p - q).abs().flatten() for p, q in zip(states[8].model.parameters(),
                                                           states[4].model.parameters())])
    assert d.max().item() < 0.05 * 5e-4
    assert (d > 1e-8).float().mean().item() < 1e-3


def test_stream_is_independent_of_the_number_of_processes():
    one = StreamSampler(10, 4, 0, 1, seed=5, start_step=0, max_steps=6)
    two = [StreamSampler(10, 4, r, 2, seed=5, start_step=0, max_steps=6) for r in range(2)]
    for step in range(1, 7):
        assert one.keys(step) == two[0].keys(step) + two[1].keys(step)
    stream = [k for step in range(1, 6) for k in one.keys(step)]  # 20 positions = 2 epochs of 10
    for epoch in (0, 1):
        assert sorted(i for i, e, _ in stream if e == epoch) == list(range(10))
    assert [s for _, _, s in one.keys(3)] == [0, 1, 2, 3]
    resumed = StreamSampler(10, 4, 0, 1, seed=5, start_step=3, max_steps=6)
    assert list(resumed) == [one.keys(4), one.keys(5), one.keys(6)]
    with pytest.raises(ValueError, match="divisible"):
        StreamSampler(10, 5, 0, 2, seed=5, start_step=0, max_steps=1)


def test_timestep_distribution():
    uniform = TimestepSampler(TimestepConfig())
    np.testing.assert_allclose(uniform.probs, np.full(1000, 1e-3))
    cut = TimestepSampler(TimestepConfig(t_max=400))
    assert cut.probs[400] == pytest.approx(1 / 401) and cut.probs[401:].sum() == 0
    mix = TimestepSampler(TimestepConfig(focus_t=400, focus_prob=0.5))
    assert mix.probs[0] == pytest.approx(0.5 / 1000 + 0.5 / 401)
    assert mix.probs[999] == pytest.approx(0.5 / 1000)
    rng = np.random.default_rng(0)
    draws = np.array([cut.draw(rng) for _ in range(2000)])
    assert draws.min() >= 0 and draws.max() <= 400 and abs(draws.mean() - 200) < 10


def test_per_sample_draws_do_not_depend_on_the_batch():
    sampler = TimestepSampler(TimestepConfig())
    dev = torch.device("cpu")
    t_all, n_all = draw_timesteps_and_noise(sampler, 1, 7, torch.arange(6), (3, 4, 4), dev)
    t_part, n_part = draw_timesteps_and_noise(sampler, 1, 7, torch.tensor([4, 5]), (3, 4, 4), dev)
    assert torch.equal(t_all[4:], t_part) and torch.equal(n_all[4:], n_part)
    t_next, _ = draw_timesteps_and_noise(sampler, 1, 8, torch.arange(6), (3, 4, 4), dev)
    assert not torch.equal(t_all, t_next)


def test_estimator_step_losses():
    class Half(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x * 0.5 + self.p

    lq = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(2, 2, 1, 1).expand(2, 2, 2, 2).clone()
    gt = torch.zeros_like(lq)
    batch = {"lq": lq, "gt": gt, "slot": torch.arange(2)}
    out = make_estimator_step("l1")(Half(), batch, 1)
    # per-sample means of |0.5 lq|: sample 0 (0.1 + 0.2) / 2, sample 1 (0.3 + 0.4) / 2
    assert out.loss.item() == pytest.approx(0.15 + 0.35)
    out = make_estimator_step("l2")(Half(), batch, 1)
    assert out.loss.item() == pytest.approx((0.01 + 0.04) / 2 + (0.09 + 0.16) / 2)


def test_diffusion_step_metrics_are_sums(prior_setup):
    cfg, batch = prior_setup
    step = make_diffusion_step(Diffusion.create(1000, "linear", ""), TimestepSampler(cfg.diffusion), cfg.seed)
    with torch.no_grad():
        out = step(build_model(cfg), batch, 1)
    assert out.loss.item() == pytest.approx(out.metrics["mse"].item() + out.metrics["vb"].item(), rel=1e-5)


@pytest.mark.slow  # fp16 and bf16 training steps are emulated on a CPU: slow
def test_one_grad_scaler_for_the_whole_run(prior_setup, tmp_path):
    cfg, _ = prior_setup
    c = tiny_config("estimator", cfg.data.folder, precision="fp16", max_steps=3, data={"degradation": "mild"})
    state = train(build_model(c), build_step(c), build_dataset(c), c, tmp_path / "fp16", CPU)
    # The scaler counts its successful steps: 3 means one scaler lived through all three (the
    # official trainer re-created it every step, which would leave 1).
    assert state.scaler.is_enabled() and state.scaler.state_dict()["_growth_tracker"] == 3
    c = tiny_config("prior", cfg.data.folder, precision="bf16", max_steps=1)
    state = train(build_model(c), build_step(c), build_dataset(c), c, tmp_path / "bf16", CPU)
    assert not state.scaler.is_enabled() and all(torch.isfinite(p).all() for p in state.model.parameters())


def test_warm_start_loads_init_weights_and_export_records_t_max(tmp_path):
    from safetensors import safe_open

    from difface.train.run import run_training
    from difface.weights import load_network, save_network

    data = write_images(tmp_path / "imgs", 8)
    src = build_model(tiny_config("prior", data, seed=7))
    save_network(src, tmp_path / "init.safetensors")
    cfg = tiny_config("prior", data, init=str(tmp_path / "init.safetensors"), diffusion={"t_max": 99})
    warm = build_model(cfg)
    for (k, a), b in zip(src.state_dict().items(), warm.state_dict().values()):
        assert torch.equal(a, b), k
    cold = build_model(cfg, warm_start=False)  # a resumed run loads its checkpoint instead
    assert not all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), cold.state_dict().values()))
    run_training(cfg, tmp_path / "run", device="cpu")
    with safe_open(str(tmp_path / "run" / "prior.safetensors"), "pt") as f:
        assert f.metadata()["difface.t_max"] == "99"
    assert load_network(tmp_path / "run" / "prior.safetensors") is not None


def test_denoising_loss_is_zero_for_an_oracle_and_reproducible():
    from difface.train.samples import denoising_loss

    class Oracle(nn.Module):  # knows the noise: recovers it from x_t and the (known) x0 = 0
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))
            self.d = Diffusion.create(1000, "linear", "")

        def forward(self, x, t):
            s = torch.tensor(self.d.sqrt_one_minus_alphas_cumprod, dtype=torch.float32)[t].view(-1, 1, 1, 1)
            return torch.cat([x / s, torch.zeros_like(x)], 1)

    half = torch.full((3, 3, 8, 8), 0.5)  # x0 = 0 in [-1, 1]
    assert denoising_loss(Oracle(), half, [20, 400]) == pytest.approx(0.0, abs=1e-10)

    class Zero(Oracle):
        def forward(self, x, t):
            return torch.zeros(x.shape[0], 6, *x.shape[2:])

    a = denoising_loss(Zero(), half, [20, 400], seed=3)
    assert a == pytest.approx(1.0, abs=0.1)  # E[noise^2] = 1
    assert denoising_loss(Zero(), half, [20, 400], seed=3) == a
