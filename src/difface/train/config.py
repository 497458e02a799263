"""Training configuration: frozen dataclasses, official defaults, strict YAML load, overrides.

A YAML file is a (partial) nested mapping over `TrainConfig`; it is merged onto the defaults of
the task (`DEFAULTS["prior"]`, `DEFAULTS["estimator"]` or
`DEFAULTS["inpainter"]`: the official training configs). Unknown keys
are an error naming the key and the file. Overrides use the same merge: `key.sub=value` with the
value parsed as YAML (`optim.lr=2e-4`, `optim.betas=[0.9,0.99]`, `data.size=null`).

The network is `model: {unet: {...}}`, `model: {swinir: {...}}` or `model: {lama: {...}}` (fields of
UNetConfig / SwinIRConfig / LamaConfig; omitted fields keep the official defaults), or a name from
`difface.models.CONFIGS`. The kind of network decides the task: unet -> prior, swinir ->
estimator, lama -> inpainter.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from difface.config import DEFAULT_STEPS
from difface.data.degrade import DEGRADATIONS
from difface.data.masks import MASK_KINDS
from difface.models import CONFIGS, KINDS, LamaConfig, NetConfig, SwinIRConfig, UNetConfig, kind_of
from difface.train.values import ConfigError, _convert, _plain

TASKS = {"unet": "prior", "swinir": "estimator", "lama": "inpainter"}  # network kind -> task
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("constant", "cosine")
LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class DataConfig:
    """Training images and validation data.

    folder: high-quality images (searched recursively when `recursive`); size: resize_square side
    (None: the network's training size); degradation: a name of difface.data.degrade.DEGRADATIONS for the
    estimator's synthetic pairs; flip: random horizontal flips; val_lq / val_hq: a paired folder
    (matched by file stem) for estimator validation and prior restoration grids (val_hq optional
    for the prior); val_count: how many validation images are used; num_workers: DataLoader workers.
    """

    folder: str = ""
    size: int | None = None
    degradation: str = "gfpgan"
    flip: bool = False
    recursive: bool = True
    val_lq: str | None = None
    val_hq: str | None = None
    val_count: int = 8
    num_workers: int = 4


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, learning-rate schedule, batch layout, clipping and EMA.

    batch_size is global (all processes together); micro_batch is the largest batch one process
    puts through the network at once (None: its whole share). The lr of step k (k = 1, 2, ...) is
    base(k) * min(1, k / warmup_steps); base is `lr` (constant) or the cosine from `lr` to
    `eta_min` over `cosine_steps` (None: max_steps): eta_min + (lr - eta_min)(1 + cos(pi (k-1)/T))/2.
    grad_clip: max global grad norm (None: off); ema_rate: EMA decay (None: no EMA).
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    eta_min: float = 0.0
    cosine_steps: int | None = None
    batch_size: int = 64
    micro_batch: int | None = None
    grad_clip: float | None = None
    ema_rate: float | None = None


@dataclass(frozen=True)
class TimestepConfig:
    """Diffusion chain and the training timestep distribution (prior only).

    t is drawn from the mixture (1 - focus_prob) U{0..t_max} + focus_prob U{0..min(focus_t, t_max)}
    (t_max None: steps - 1). The default is uniform over all steps (official). focus_t 400 with
    focus_prob > 0 favours the range DifFace's sampler uses (t <= 400 at start step 100 of ddim250).
    Loss weights stay 1, so this re-weights the objective towards small t.
    """

    steps: int = 1000
    schedule: str = "linear"
    t_max: int | None = None
    focus_t: int = 400
    focus_prob: float = 0.0


@dataclass(frozen=True)
class SampleConfig:
    """What is drawn every `sample_every` steps.

    Prior: `num_samples` unconditional DDIM samples (`respacing`, eta 0, fixed seeds) and, when an
    `estimator` file is given and validation LQ images exist, DifFace restorations of them with
    `restore_respacing`, `start_step`, `eta`. Estimator: validation PSNR/SSIM (Y) and a grid.
    """

    num_samples: int = 16
    respacing: str = "ddim25"
    estimator: str | None = None
    restore_respacing: str = DEFAULT_STEPS
    start_step: int = 100
    eta: float = 0.5


@dataclass(frozen=True)
class MaskConfig:
    """Masks of the inpainter (difface.data.masks; 1 = missing).

    kind: training mask generator, one of MASK_KINDS ("mixed": irregular / box / outpainting with
    probability 1/3 each, official); hole_weight: weight of a missing pixel in the weighted L1
    (official 10; known pixels weigh 1); val_seed: the validation masks are
    seeded_mask("mixed", size, val_seed, i) for validation image i, the same in every run.
    """

    kind: str = "mixed"
    hole_weight: float = 10.0
    val_seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (see the module docstring for the YAML form).

    loss: estimator pixel loss, l1 (official) or l2 (the inpainter's is weighted by `masks.hole_weight`);
    masks: inpainter masks (MaskConfig); precision: fp32 | bf16 | fp16 (autocast; a
    GradScaler only for fp16); max_steps: optimizer steps in total; log_every / sample_every /
    checkpoint_every: periods in steps (0: only at the last step; the last step always logs,
    samples, checkpoints and exports); keep_checkpoints: newest checkpoints kept (0: all); seed:
    model init, sample order, flips/degradations and per-sample timesteps/noise all derive from it.
    init: weights file (or registry name) of the same architecture to start from instead of the
    random init (a warm start: optimizer, EMA and step start afresh; `--resume` continues a run).
    """

    model: NetConfig = field(default_factory=UNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    diffusion: TimestepConfig = field(default_factory=TimestepConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    loss: str = "l1"
    precision: str = "fp32"
    max_steps: int = 800_000
    log_every: int = 100
    sample_every: int = 10_000
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 3
    seed: int = 10000
    init: str | None = None

    @property
    def task(self) -> str:
        """prior (UNet) | estimator (SwinIR) | inpainter (LaMa)."""
        return TASKS[kind_of(self.model)]

    @property
    def native_size(self) -> int | None:
        """The side the network is built for (None for LaMa, which is fully convolutional)."""
        m = self.model
        if isinstance(m, UNetConfig):
            return m.image_size
        if isinstance(m, SwinIRConfig):
            return m.img_size * m.sf
        return None

    @property
    def image_size(self) -> int:
        """Side of the training images: data.size, else the network's training size (LaMa: 256, official)."""
        if self.data.size:
            return int(self.data.size)
        return self.native_size or 256

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON friendly; tuples become lists) that `from_dict` reads back."""
        # `masks` only for the inpainter, so prior/estimator configs (and their checkpoints) are unchanged.
        skip = {"model"} | ({"masks"} if self.task != "inpainter" else set())
        d = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in skip}
        return {"model": {kind_of(self.model): _plain(self.model.to_dict())}, **d}


DEFAULTS: dict[str, TrainConfig] = {
    # Official diffusion_ffhq512.yaml: unet_ffhq512, lr 1e-4, batch 64 / micro 8, 10k warm-up, EMA 0.999, 800k steps.
    "prior": TrainConfig(
        model=CONFIGS["unet_ffhq512"],
        optim=OptimConfig(lr=1e-4, warmup_steps=10_000, batch_size=64, micro_batch=8, ema_rate=0.999),
    ),
    # Official: swinir_restoration512, L1, lr 5e-5 cosine to 5e-6 over 300k, batch 32 / micro 8, no EMA.
    "estimator": TrainConfig(
        model=CONFIGS["swinir_restoration512"],
        data=DataConfig(flip=True),
        optim=OptimConfig(lr=5e-5, schedule="cosine", eta_min=5e-6, batch_size=32, micro_batch=8),
        max_steps=300_000,
    ),
    # Official: lama_inpainting256 on 256 px faces, weighted L1 (holes x10), mixed masks, lr 1e-4 cosine
    # to 5e-6 over 500k, batch 64 / micro 16, EMA 0.999. The official run normalised BatchNorm over
    # the 64 samples of a step (SyncBatchNorm on 4 GPUs x 16); here BatchNorm sees one micro-batch.
    "inpainter": TrainConfig(
        model=CONFIGS["lama_inpainting256"],
        data=DataConfig(size=256),
        optim=OptimConfig(lr=1e-4, schedule="cosine", eta_min=5e-6, cosine_steps=500_000, batch_size=64,
                          micro_batch=16, ema_rate=0.999),
        max_steps=500_000,
    ),
}


def _merge_model(current: NetConfig, value: Any, where: str) -> NetConfig:
    if isinstance(value, str):
        if value not in CONFIGS:
            raise ConfigError(f"{where}: unknown network {value!r}; known: {', '.join(CONFIGS)}")
        return CONFIGS[value]
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in KINDS:
        raise ConfigError(f"{where}: expected {{unet: {{...}}}}, {{swinir: {{...}}}}, {{lama: {{...}}}} or a "
                          "network name")
    kind, fields_ = next(iter(value.items()))
    cls = KINDS[kind]
    base = current if isinstance(current, cls) else cls()
    return _merge(base, fields_ or {}, f"{where}.{kind}")


def _merge(obj: Any, updates: Any, where: str) -> Any:
    """A copy of dataclass `obj` with the nested mapping `updates` applied (strict, typed)."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)} - {"extra"}
    changes = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown key {path!r}; allowed here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if key == "model" and isinstance(obj, TrainConfig):
            changes[key] = _merge_model(current, value, path)
        elif dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, path)
        else:
            changes[key] = _convert(value, hints[key], path)
    try:
        return dataclasses.replace(obj, **changes)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from e


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check value ranges and cross-field consistency; returns cfg or raises ConfigError."""
    o, d, t = cfg.optim, cfg.data, cfg.diffusion
    checks = [
        (cfg.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
        (cfg.loss in LOSSES, f"loss must be one of {LOSSES}"),
        (o.schedule in SCHEDULES, f"optim.schedule must be one of {SCHEDULES}"),
        (o.lr > 0 and o.batch_size > 0, "optim.lr and optim.batch_size must be positive"),
        (o.micro_batch is None or o.micro_batch > 0, "optim.micro_batch must be positive"),
        (o.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (o.ema_rate is None or 0.0 <= o.ema_rate < 1.0, "optim.ema_rate must lie in [0, 1)"),
        (o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip must be positive"),
        (t.t_max is None or 0 <= t.t_max < t.steps, "diffusion.t_max must lie in [0, steps)"),
        (0.0 <= t.focus_prob <= 1.0 and t.focus_t >= 0, "diffusion.focus_prob must lie in [0, 1]"),
        (cfg.max_steps >= 0 and d.val_count >= 0 and d.num_workers >= 0, "counts must be >= 0"),
        (min(cfg.log_every, cfg.sample_every, cfg.checkpoint_every, cfg.keep_checkpoints) >= 0,
         "log_every, sample_every, checkpoint_every and keep_checkpoints must be >= 0"),
        (d.size is None or d.size > 0, "data.size must be positive"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    if cfg.task == "inpainter":
        if cfg.masks.kind not in MASK_KINDS:
            raise ConfigError(f"masks.kind: unknown mask kind {cfg.masks.kind!r}; known: {', '.join(MASK_KINDS)}")
        if not cfg.masks.hole_weight > 0:
            raise ConfigError("masks.hole_weight must be positive")
        m = cfg.model.multiple if isinstance(cfg.model, LamaConfig) else 1
        if cfg.image_size % m:
            raise ConfigError(f"data.size: {cfg.image_size} is not a multiple of {m} (LaMa downsamples "
                              f"{cfg.model.n_downsampling} times)")
    if cfg.task == "estimator":
        if d.degradation not in DEGRADATIONS:
            raise ConfigError(f"data.degradation: unknown degradation {d.degradation!r}; known: {sorted(DEGRADATIONS)}")
    return cfg


def from_dict(d: dict, task: str | None = None, where: str = "") -> TrainConfig:
    """Merge a nested mapping onto DEFAULTS[task] (task None: taken from the mapping's model kind)."""
    if task is None:
        model = (d or {}).get("model")
        kind = next(iter(model), None) if isinstance(model, dict) else None
        if isinstance(model, str) and model in CONFIGS:
            kind = kind_of(CONFIGS[model])
        task = TASKS.get(kind, "prior")
    if task not in DEFAULTS:
        raise ConfigError(f"unknown task {task!r}; use {', '.join(DEFAULTS)}")
    try:
        cfg = _merge(DEFAULTS[task], d or {}, "")
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    if cfg.task != task:
        needs = {t: k for k, t in TASKS.items()}[task]
        raise ConfigError(f"{where or 'config'}: a {task} needs a {needs} model")
    return cfg


# What a config file without a network should suggest, per task: (small network, example file).
_MODEL_HINTS = {
    "prior": ("unet_small", "prior_tiny64.yaml"),
    "estimator": ("swinir_small", "estimator_tiny64.yaml"),
    "inpainter": ("lama_small", "inpainter_tiny64.yaml"),
}


def _model_hint(task: str | None) -> str:
    tasks = [task] if task in _MODEL_HINTS else list(_MODEL_HINTS)
    names = " or ".join(f"'model: {_MODEL_HINTS[t][0]}'" for t in tasks)
    examples = ", ".join(f"configs/train/{_MODEL_HINTS[t][1]}" for t in tasks)
    official = " / ".join(_config_name(DEFAULTS[t].model) for t in tasks)
    return (f"write e.g. {names} (a small network), a network mapping as in {examples}, or 'model: {official}' "
            "for the official recipe (which needs GPUs with tens of GB)")


def _config_name(model: NetConfig) -> str:
    """The name of `model` in difface.models.CONFIGS (else its kind: unet, swinir, lama)."""
    return next((name for name, c in CONFIGS.items() if c == model), kind_of(model))


def load_config(path: str | os.PathLike, task: str | None = None) -> TrainConfig:
    """Read a YAML training config strictly (unknown keys and wrong types raise ConfigError).

    The file must name its network (`model:`): an empty file, or one without `model`, raises
    ConfigError saying what to write, instead of silently training the official 512 px network.
    """
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if d is None:
        raise ConfigError(f"{path}: the config is empty; it must at least name the network to train: "
                          + _model_hint(task))
    cfg = from_dict(d, task, where=str(path))
    if isinstance(d, dict) and "model" not in d:
        raise ConfigError(f"{path}: the config names no network (key 'model'), so it would train the official "
                          f"{cfg.image_size} px network; " + _model_hint(task))
    return cfg


def parse_override(item: str) -> dict:
    """'optim.lr=2e-4' -> {'optim': {'lr': 2e-4}} (the value is parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=2e-4")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def apply_overrides(cfg: TrainConfig, overrides: dict | list[str]) -> TrainConfig:
    """A new config with overrides applied: a nested mapping or a list of 'a.b=value' strings."""
    items = [parse_override(s) for s in overrides] if isinstance(overrides, list) else [overrides]
    for upd in items:
        cfg = _merge(cfg, upd, "")
    return validate(cfg)


def dump_config(cfg: TrainConfig) -> str:
    """YAML text of cfg (read back by `from_dict(yaml.safe_load(text))`)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# Keys that may change when a run is resumed (they do not alter the optimisation trajectory).
RESUMABLE_CHANGES = frozenset({
    "max_steps", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "data.folder",
    "data.num_workers", "data.val_lq", "data.val_hq", "data.val_count", "sample", "init",
})


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two `to_dict()` configs (nested dicts walked)."""
    out = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{path}.")
        elif a != b:
            out.append(path)
    return out


def check_resumable(old: dict, new: TrainConfig) -> list[str]:
    """Raise ConfigError if `new` differs from the checkpoint's config `old` in a key that shapes
    the optimisation; return the (allowed) differing keys otherwise."""
    diffs = config_differences(old, new.to_dict())
    allowed = [d for d in diffs if d in RESUMABLE_CHANGES or d.split(".")[0] in RESUMABLE_CHANGES]
    bad = [d for d in diffs if d not in allowed]
    if bad:
        raise ConfigError(
            "the config differs from the checkpoint's in " + ", ".join(bad)
            + "; resume without --config (the checkpoint's config is used) or start a new run"
        )
    return allowed
