"""One typed configuration schema for every job (train, probe, retrieve).

The schema is a tree of dataclasses. A YAML file and ``key.sub=value`` overrides are merged
into it; unknown keys, wrong types and out-of-range values are errors naming the key and what
would be accepted. Keys that were renamed are errors naming the new key. Derived values (the
global batch size, the scaled learning rate) are written by :func:`resolve` into the
``derived`` section, never into the user's own keys and never computed silently elsewhere, so
resolving twice changes nothing and a changed batch re-derives them; the resolved config is
what a run saves next to its results.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from eigenmap.durable import atomic_write_text
from eigenmap.timm_models import TimmArgumentError, check_timm_model

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "apply_overrides",
    "from_dict",
    "to_dict",
    "to_yaml",
    "save_config",
    "resolve",
    "describe_keys",
]


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


def _f(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None, **limits: Any) -> Any:
    """A dataclass field with help text and optional limits (``ge``, ``gt``, ``le``, ``lt``)."""
    meta = {"help": help, **limits}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    arch: str = _f(
        "resnet50", "backbone: a torchvision ResNet (resnet18, resnet34, resnet50: the paper's recipe) or timm:NAME, "
        "any timm image model (timm.list_models()) built with pretrained=False, num_classes=0: its pooled "
        "features are the encoder output (docs/backbones.md)")
    timm_kwargs: dict[str, Any] = _f(
        factory=dict, help="keyword arguments of timm.create_model for model.arch=timm:NAME, settable key by key: "
        "model.timm_kwargs.img_size=32 model.timm_kwargs.patch_size=4 (keep img_size = data.resolution)")
    grad_checkpointing: bool = _f(
        False, "timm backbones: recompute activations in the backward (timm's set_grad_checkpointing): less "
        "memory per image, about a third more compute")
    small_image_stem: bool = _f(
        False, "torchvision ResNets: 3x3 stride-1 first conv and no max-pool: use for inputs of 64 px and below"
    )
    projector_hidden_dim: int = _f(
        8192, "d in Linear(feat->d, no bias) -> BN -> ReLU -> Linear(d->k); 0 = a single Linear", ge=0
    )
    projector_out_dim: int = _f(8192, "k, the number of eigenfunctions (code length)", ge=1)
    sync_batchnorm: bool = _f(True, "synchronise BatchNorm statistics across workers")
    channels_last: bool = _f(
        True, "channels_last memory format for a convolutional backbone (ignored for one with a single conv, "
        "a ViT's patch embedding, where it does not help)")
    online_classifier: bool = _f(
        True, "linear classifier on DETACHED encoder features, for monitoring only"
    )
    num_classes: int = _f(
        1000, "classes of the online classifier (the dataset manifest's count)", ge=1
    )


@dataclass
class LossConfig:
    name: Literal["neuralef", "simclr", "barlow_twins", "spectral_contrastive", "matryoshka"] = _f(
        "neuralef", "training objective (matryoshka: SimCLR's NT-Xent summed over nested prefixes of the outputs)"
    )
    alpha: float = _f(
        0.0025, "NeuralEF reg weight: 0.0025 for k=8192, 0.005 for k=4096, 0.01 for k=2048", ge=0.0
    )
    alpha_final: Optional[float] = _f(
        None, "NeuralEF: when set, the reg weight moves linearly from loss.alpha at the first step (or at "
              "loss.alpha_ramp_start) to this at the last (the planned run's)", ge=0.0
    )
    alpha_ramp_start: float = _f(
        0.0, "NeuralEF with loss.alpha_final: the fraction of the planned run at which the ramp from loss.alpha "
             "begins (0: the first step)", ge=0.0, lt=1.0
    )
    t: float = _f(10.0, "L2-BatchNorm scale: columns are normalised to sum of squares 2t", gt=0.0)
    stop_grad: bool = _f(
        True, "NeuralEF stop-grad variant (orders the eigenfunctions); false = better probe"
    )
    ema_momentum: float = _f(
        0.99, "momentum of the L2-BatchNorm running mean square and eigenvalues", ge=0.0, lt=1.0
    )
    temperature: float = _f(0.1, "NT-Xent temperature of simclr and of every matryoshka prefix", gt=0.0)
    matryoshka_lengths: Optional[tuple[int, ...]] = _f(
        None, "matryoshka: the nested prefix lengths m, strictly increasing, at most model.projector_out_dim (k); "
              "null = the powers of two from 8 below k, and k (the paper's {8, 16, ..., k})"
    )
    matryoshka_weights: Optional[tuple[float, ...]] = _f(
        None, "matryoshka: the positive weight c_m of each prefix's loss, one per length; null = 1 each (the paper's)"
    )
    barlow_lambda: float = _f(0.0051, "Barlow Twins off-diagonal weight", ge=0.0)
    spectral_mu: float = _f(
        1.0, "spectral contrastive: projections of norm >= sqrt(mu) are scaled to that norm (the authors' mu)", gt=0.0
    )
    gather_distributed: bool = _f(
        True, "compute the loss on outputs gathered from all workers (autograd-aware)"
    )

    def nested_lengths(self, k: int) -> tuple[int, ...]:
        """The Matryoshka prefix lengths for k outputs: ``matryoshka_lengths``, or by default the
        powers of two 8, 16, ... below k followed by k itself (just k when k <= 8)."""
        if self.matryoshka_lengths is not None:
            return self.matryoshka_lengths
        return tuple(2**i for i in range(3, k.bit_length()) if 2**i < k) + (k,)

    def check_matryoshka(self, k: int) -> None:
        """Raise ConfigError when the Matryoshka keys do not fit k outputs (or are set for another loss)."""
        if self.name != "matryoshka":
            for key in ("matryoshka_lengths", "matryoshka_weights"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"config key 'loss.{key}' applies to loss.name=matryoshka only, not "
                                      f"{self.name!r}; leave it unset (null)")
            return
        lengths = self.nested_lengths(k)
        if any(m < 1 for m in lengths) or any(a >= b for a, b in zip(lengths, lengths[1:])):
            raise ConfigError(f"config key 'loss.matryoshka_lengths': {list(lengths)} is not a strictly increasing "
                              "list of positive lengths; accepted: e.g. [8, 16, 32, 64]")
        if lengths[-1] > k:
            raise ConfigError(f"config key 'loss.matryoshka_lengths': {lengths[-1]} exceeds the k = {k} outputs "
                              f"(model.projector_out_dim); accepted: lengths from 1 to {k}")
        weights = self.matryoshka_weights
        if weights is not None and len(weights) != len(lengths):
            raise ConfigError(f"config key 'loss.matryoshka_weights': {len(weights)} weights {list(weights)} for "
                              f"{len(lengths)} lengths {list(lengths)}; give one weight per length, or null (1 each)")
        if weights is not None and any(w <= 0 for w in weights):
            raise ConfigError(f"config key 'loss.matryoshka_weights': {list(weights)} has a weight <= 0; accepted: "
                              "positive numbers (to drop a length, leave it out of loss.matryoshka_lengths)")


@dataclass
class OptimConfig:
    name: Literal["lars", "sgd", "adamw"] = _f("lars", "optimiser")
    base_lr: float = _f(
        0.3, "learning rate per 256 images of global batch (recipe: 2.4 at 2048 = 0.3)", gt=0.0
    )
    lr: Optional[float] = _f(
        None, "peak learning rate; null = base_lr * global_batch_size / 256 (derived.lr holds the one used)",
        gt=0.0
    )
    momentum: float = _f(0.9, "SGD/LARS momentum (AdamW beta1)", ge=0.0, lt=1.0)
    weight_decay: float = _f(
        1e-6, "weight decay; biases, norm parameters, position embeddings and tokens are excluded", ge=0.0)
    weight_decay_final: Optional[float] = _f(
        None, "when set, the weight decay follows a half cosine from optim.weight_decay at the first step to this "
              "at the last of the planned run (DINO's ViT recipe: 0.04 -> 0.4); null = constant", ge=0.0)
    trust_coefficient: float = _f(0.001, "LARS trust coefficient", gt=0.0)
    warmup_epochs: float = _f(
        10.0, "linear warm-up length, in epochs; with train.max_steps it keeps its share of the run "
        "(warmup_epochs / epochs of max_steps: 10 of 100 epochs is 10% of the steps), so a shortened recipe "
        "warms up and decays in the same proportions (derived.warmup_steps holds the steps)", ge=0.0)
    final_lr_ratio: float = _f(0.001, "cosine schedule ends at this fraction of lr", ge=0.0, le=1.0)
    grad_clip: Optional[float] = _f(
        None, "clip the global gradient norm (all workers' gradients) to this; null = off (ViT recipes: 3.0)", gt=0.0)
    online_head_lr: float = _f(
        1.0, "peak lr of the online monitoring classifier on standardised features (same schedule; "
        "not the linear probe's eval.probe_lr)", gt=0.0)


@dataclass
class ViewAugmentConfig:
    """Per-view augmentation parameters (the BYOL-style asymmetric recipe)."""

    flip_prob: float = _f(0.5, "horizontal flip probability", ge=0.0, le=1.0)
    color_jitter_prob: float = _f(0.8, "probability of colour jitter", ge=0.0, le=1.0)
    brightness: float = _f(0.4, "colour jitter brightness strength", ge=0.0)
    contrast: float = _f(0.4, "colour jitter contrast strength", ge=0.0)
    saturation: float = _f(0.2, "colour jitter saturation strength", ge=0.0)
    hue: float = _f(0.1, "colour jitter hue strength", ge=0.0, le=0.5)
    grayscale_prob: float = _f(0.2, "grayscale probability", ge=0.0, le=1.0)
    blur_prob: float = _f(1.0, "Gaussian blur probability", ge=0.0, le=1.0)
    blur_sigma_min: float = _f(0.1, "smallest blur sigma, in pixels at 224 px", gt=0.0)
    blur_sigma_max: float = _f(2.0, "largest blur sigma, in pixels at 224 px", gt=0.0)
    solarize_prob: float = _f(0.0, "solarisation probability", ge=0.0, le=1.0)
    solarize_threshold: float = _f(0.5, "solarise pixels at or above this value in [0, 1]", ge=0.0, le=1.0)


def _view2_defaults() -> ViewAugmentConfig:
    return ViewAugmentConfig(blur_prob=0.1, solarize_prob=0.2)


@dataclass
class DataConfig:
    train_path: str = _f(
        "", "training .beton written by `eigenmap prepare`, or the literal 'synthetic' (random "
        "pixels made on the device: benchmarks and GPU checks, no data needed)"
    )
    synthetic_images: int = _f(
        4096, "images per epoch over all workers when train_path is 'synthetic'", ge=1
    )
    val_path: str = _f("", "validation .beton (probe, kNN, retrieval database/queries)")
    resolution: int = _f(224, "output side of the random-resized crop, pixels", ge=8)
    eval_resize: int = _f(256, "evaluation: resize the short side to this, then centre crop", ge=8)
    scale_min: float = _f(0.08, "random-resized-crop smallest area fraction", gt=0.0, le=1.0)
    scale_max: float = _f(1.0, "random-resized-crop largest area fraction", gt=0.0, le=1.0)
    ratio_min: float = _f(3 / 4, "random-resized-crop smallest aspect ratio", gt=0.0)
    ratio_max: float = _f(4 / 3, "random-resized-crop largest aspect ratio", gt=0.0)
    batch_size_per_worker: int = _f(256, "images per worker per step (each gives two views)", ge=1)
    loader_workers: int = _f(8, "CPU threads decoding for each training worker", ge=1)
    os_cache: bool = _f(False, "memory-map the whole .beton (fits in RAM) instead of paging it")
    mean: tuple[float, float, float] = _f((0.485, 0.456, 0.406), "normalisation mean, RGB in [0,1]")
    std: tuple[float, float, float] = _f((0.229, 0.224, 0.225), "normalisation std, RGB in [0,1]")
    view1: ViewAugmentConfig = _f(factory=ViewAugmentConfig, help="view 1 augmentations")
    view2: ViewAugmentConfig = _f(factory=_view2_defaults, help="view 2 augmentations")


@dataclass
class DistConfig:
    num_workers: int = _f(1, "training workers (processes), one per GPU on a GPU cluster", ge=1)
    cpus_per_worker: int = _f(1, "CPU cores reserved for each worker (threads it uses)", ge=1)
    gpus_per_worker: float = _f(0.0, "GPUs per worker: 1 on a GPU cluster, 0 on CPU", ge=0.0)
    address: Optional[str] = _f(
        None, "Ray cluster to join: null = embedded local cluster, 'auto', or 'host:port'"
    )
    zero_stage: int = _f(
        0, "DeepSpeed ZeRO stage: 1 shards the optimiser state, 2 also the gradients, 3 also the parameters "
        "(for backbones whose training state does not fit one worker; docs/backbones.md has the measured memory)",
        ge=0, le=3)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto", "auto = bf16 on GPU, fp32 on CPU"
    )
    max_failures: int = _f(3, "restarts of the worker group from the latest checkpoint", ge=0)
    compile: bool = _f(False, "torch.compile the model (GPU)")


@dataclass
class TrainConfig:
    run_dir: str = _f("runs/default", "where config, checkpoints, TensorBoard and weights go")
    epochs: int = _f(100, "passes over the training set", ge=1)
    max_steps: Optional[int] = _f(
        None, "the planned length in optimiser steps, as in Hugging Face's Trainer: when set it overrides "
        "train.epochs (fewer or more steps), and warm-up, cosine and NeuralEF's alpha ramp span it; null = "
        "train.epochs x derived.steps_per_epoch. A resume that changes the plan (derived.total_steps or "
        "derived.warmup_steps) is refused unless --allow-config-change, which follows the new plan from the "
        "checkpoint's step (the lr moves to the new schedule's value there)", ge=1)
    seed: int = _f(0, "seed of the data order, augmentations and initialisation", ge=0)
    log_every_steps: int = _f(10, "steps between scalar logs (the only .item() calls)", ge=1)
    checkpoint_every_steps: int = _f(500, "steps between checkpoints (also at each epoch end)", ge=1)
    keep_checkpoints: int = _f(3, "checkpoints kept, newest first", ge=1)
    progress_bar: bool = _f(True, "rank 0 progress bar")
    tensorboard: bool = _f(True, "rank 0 TensorBoard events")


@dataclass
class EvalConfig:
    probe_epochs: int = _f(100, "linear probe epochs (cosine schedule)", ge=1)
    probe_lr: float = _f(0.1, "linear probe SGD lr (0.1-0.3)", gt=0.0)
    probe_batch_size: int = _f(256, "linear probe batch size", ge=1)
    probe_weight_decay: float = _f(1e-6, "linear probe weight decay", ge=0.0)
    knn_ks: tuple[int, ...] = _f((20, 200), "neighbour counts of the weighted kNN classifier")
    knn_temperature: float = _f(0.07, "kNN similarity temperature", gt=0.0)


@dataclass
class DerivedConfig:
    """Values computed from the others by :func:`resolve`; recorded, never set by hand."""

    global_batch_size: Optional[int] = _f(None, "num_workers * batch_size_per_worker")
    lr: Optional[float] = _f(None, "the peak lr used: optim.lr, or optim.base_lr * global_batch_size / 256")
    train_images: Optional[int] = _f(
        None, "images in data.train_path (its manifest or FFCV header; data.synthetic_images for 'synthetic')")
    steps_per_epoch: Optional[int] = _f(
        None, "optimiser steps per epoch: whole global batches of train_images (each worker's shard, last "
              "partial batch dropped)")
    total_steps: Optional[int] = _f(None, "the planned run: train.max_steps, else train.epochs x steps_per_epoch")
    warmup_steps: Optional[int] = _f(
        None, "linear warm-up steps: optim.warmup_epochs x steps_per_epoch, or with train.max_steps its share "
              "(warmup_epochs / epochs) of total_steps; at most total_steps")


@dataclass
class Config:
    model: ModelConfig = _f(factory=ModelConfig, help="encoder and projector")
    loss: LossConfig = _f(factory=LossConfig, help="objective")
    optim: OptimConfig = _f(factory=OptimConfig, help="optimiser and schedule")
    data: DataConfig = _f(factory=DataConfig, help="data and augmentations")
    dist: DistConfig = _f(factory=DistConfig, help="workers, DeepSpeed, Ray")
    train: TrainConfig = _f(factory=TrainConfig, help="run length, logging, checkpoints")
    eval: EvalConfig = _f(factory=EvalConfig, help="linear probe and kNN")
    derived: DerivedConfig = _f(factory=DerivedConfig, help="filled by resolve()")


# --------------------------------------------------------------------------------------------
# Conversion and validation
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return "a non-empty list of " + _type_name(args[0])
        return "a list of " + str(len(args)) + " " + _type_name(args[0])
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    if origin is dict:
        return "a mapping of names to values"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in the schema's own type."""
    origin = typing.get_origin(tp)
    wrong = ConfigError(f"config key '{key}': got {value!r} ({type(value).__name__}); expected {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise wrong
        return _build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise wrong
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise wrong
        return value
    if origin is dict:  # free-form keyword arguments (model.timm_kwargs): their owner checks them
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise wrong
        return dict(value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any non-empty length
            args = (args[0],) * (len(value) if isinstance(value, (list, tuple)) else 0)
        if not isinstance(value, (list, tuple)) or len(value) != len(args) or not args:
            raise wrong
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}': got {value!r}; expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise TypeError(f"unsupported annotation {tp!r} for '{key}'")


class KeyDescription(typing.NamedTuple):
    """One key of the schema: dotted name, type in words (with its limits), default, help."""

    key: str
    type: str
    default: Any
    help: str


def describe_keys(cls: type = Config, prefix: str = "", defaults: Any = None) -> list[KeyDescription]:
    """Every leaf key of the schema under ``cls``, in declaration order (what ``eigenmap config
    --keys`` lists).

    Each default is read from a default-built config (``defaults``: an instance of ``cls``; by
    default ``cls()``), not from the field: a section's factory may set its own values
    (``data.view2`` is built with blur 0.1 and solarize 0.2, not the view class's 1.0 and 0.0).
    """
    out = []
    defaults = cls() if defaults is None else defaults
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, default = hints[f.name], getattr(defaults, f.name)
        if dataclasses.is_dataclass(tp):
            out += describe_keys(tp, f"{prefix}{f.name}.", default)
            continue
        limits = " and ".join(f"{sym} {f.metadata[name]}" for name, sym in
                              (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if name in f.metadata)
        out.append(KeyDescription(prefix + f.name, _type_name(tp) + (f", {limits}" if limits else ""),
                                  to_dict(default) if dataclasses.is_dataclass(default) else default,
                                  f.metadata.get("help", "")))
    return out


def _check_limits(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    if value is None or isinstance(value, (bool, str, tuple)) or dataclasses.is_dataclass(value):
        return
    bounds = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
              "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}
    for name, (sym, ok) in bounds.items():
        if name in meta and not ok(value, meta[name]):
            accepted = " and ".join(f"{s} {meta[n]}" for n, (s, _) in bounds.items() if n in meta)
            raise ConfigError(f"config key '{key}': {value!r} is out of range; accepted: {accepted}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; accepted keys"
            f"{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in values.items():
        key = prefix + name
        kwargs[name] = _convert(value, hints[name], key)
        _check_limits(kwargs[name], fields[name].metadata, key)
    obj = cls(**kwargs)
    for name, f in fields.items():  # defaults are validated too (e.g. a None that must be set)
        if name not in values:
            _check_limits(getattr(obj, name), f.metadata, prefix + name)
    return obj


def from_dict(values: dict, cls: type = Config) -> Any:
    """Build a config from a nested mapping; missing keys take their defaults.

    Raises:
        ConfigError: unknown key, wrong type or out-of-range value, naming the key.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(values).__name__}")
    cfg = _build(cls, values)
    if cls is Config:
        _check_cross_field(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts/lists (YAML-safe)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50")
TIMM_PREFIX = "timm:"


def _check_backbone(m: ModelConfig, resolution: int) -> None:
    """model.arch is a torchvision ResNet or ``timm:NAME``; the keys of the other kind stay unset.
    A timm name and its keyword arguments are checked by building the model on the meta device."""
    if m.arch in TORCHVISION_ARCHS:
        for key, value in (("timm_kwargs", m.timm_kwargs), ("grad_checkpointing", m.grad_checkpointing)):
            if value:
                raise ConfigError(f"config key 'model.{key}' ({value!r}) applies to timm backbones (model.arch="
                                  f"timm:NAME), not the torchvision {m.arch!r}; leave it unset")
        return
    name = m.arch[len(TIMM_PREFIX):] if m.arch.startswith(TIMM_PREFIX) else ""
    if not name:
        raise ConfigError(f"config key 'model.arch': {m.arch!r} is not a backbone; accepted: "
                          f"one of {', '.join(map(repr, TORCHVISION_ARCHS))}, or 'timm:NAME' with NAME one of timm.list_models() "
                          "(e.g. timm:vit_small_patch16_224, timm:convnext_atto)")
    if m.small_image_stem:
        raise ConfigError(f"config key 'model.small_image_stem' applies to the torchvision ResNets, not {m.arch!r}; "
                          "set a timm model's own options through model.timm_kwargs")
    try:
        check_timm_model(name, m.timm_kwargs, resolution)  # imports timm (seconds): only for timm archs
    except TimmArgumentError as e:
        raise ConfigError(str(e)) from None


def _check_cross_field(cfg: Config) -> None:
    _check_backbone(cfg.model, cfg.data.resolution)
    if cfg.loss.alpha_final is not None and cfg.loss.name != "neuralef":
        raise ConfigError(f"config key 'loss.alpha_final' ({cfg.loss.alpha_final}) applies to loss.name=neuralef only, "
                          f"not {cfg.loss.name!r}; leave it unset (null)")
    if cfg.loss.alpha_ramp_start and cfg.loss.alpha_final is None:
        raise ConfigError(f"config key 'loss.alpha_ramp_start' ({cfg.loss.alpha_ramp_start}) starts a ramp, but "
                          "'loss.alpha_final' is unset; set loss.alpha_final, or leave loss.alpha_ramp_start at 0")
    cfg.loss.check_matryoshka(cfg.model.projector_out_dim)
    if any(k < 1 for k in cfg.eval.knn_ks):
        raise ConfigError(f"config key 'eval.knn_ks': {list(cfg.eval.knn_ks)} has a count below 1; accepted: counts >= 1")
    d = cfg.data
    if d.scale_min > d.scale_max:
        raise ConfigError(f"config keys 'data.scale_min' ({d.scale_min}) > 'data.scale_max' ({d.scale_max})")
    if d.ratio_min > d.ratio_max:
        raise ConfigError(f"config keys 'data.ratio_min' ({d.ratio_min}) > 'data.ratio_max' ({d.ratio_max})")
    if d.eval_resize < d.resolution:
        raise ConfigError(
            f"config key 'data.eval_resize' ({d.eval_resize}) must be >= 'data.resolution' ({d.resolution})"
        )
    for view in ("view1", "view2"):
        v = getattr(d, view)
        if v.blur_sigma_min > v.blur_sigma_max:
            raise ConfigError(f"config key 'data.{view}.blur_sigma_min' must be <= 'data.{view}.blur_sigma_max'")


def apply_overrides(values: dict, overrides: typing.Sequence[str]) -> dict:
    """Apply ``section.key=value`` strings to a nested mapping (values parsed as YAML scalars).

    Returns a new mapping; the key path is checked against the schema when the result is built.
    """
    out = yaml.safe_load(yaml.safe_dump(values)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key in {path!r}")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{p}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load_config(path: Optional[Union[str, Path]] = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: missing file, invalid YAML, or any invalid key/value.
    """
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist (pass a YAML file such as configs/demo.yaml)")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from None
    return from_dict(apply_overrides(values, overrides))


def resolve(cfg: Config, *, train_images: Optional[int] = None, steps_per_epoch: Optional[int] = None) -> Config:
    """A new config whose ``derived`` section is computed from the others.

    ``derived.global_batch_size = dist.num_workers * data.batch_size_per_worker``;
    ``derived.lr = optim.lr`` when set, else ``optim.base_lr * global_batch_size / 256``.
    The plan of the run needs the training set, which this schema does not read:
    :func:`eigenmap.train.checks.prepare_train_config` counts its images and steps per epoch
    (the loader's sharding rule) and passes them here, which fills ``derived.train_images``,
    ``steps_per_epoch``, ``total_steps`` (``train.max_steps``, else ``train.epochs x
    steps_per_epoch``) and ``warmup_steps`` (``optim.warmup_epochs x steps_per_epoch``; with
    ``train.max_steps`` its share ``warmup_epochs / epochs`` of the planned steps, so a shortened
    recipe keeps its proportions; never more than the planned steps). Without them those stay
    null. The user's keys are never written, so ``resolve(resolve(c, ...), ...) == resolve(c,
    ...)`` and a config whose batch changed after resolving gets its lr re-derived by the next
    ``resolve``.
    """
    cfg = from_dict(to_dict(cfg))
    gbs = cfg.dist.num_workers * cfg.data.batch_size_per_worker
    derived = DerivedConfig(global_batch_size=gbs,
                            lr=cfg.optim.lr if cfg.optim.lr is not None else cfg.optim.base_lr * gbs / 256,
                            train_images=train_images, steps_per_epoch=steps_per_epoch)
    if steps_per_epoch is not None:
        t, warmup = cfg.train, cfg.optim.warmup_epochs
        if t.max_steps is None:
            total, warmup_steps = t.epochs * steps_per_epoch, round(warmup * steps_per_epoch)
        else:
            total, warmup_steps = t.max_steps, round(warmup / t.epochs * t.max_steps)
        derived.total_steps, derived.warmup_steps = total, min(warmup_steps, total)
    cfg.derived = derived
    return cfg


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the config as YAML, atomically and durably (:func:`eigenmap.durable.atomic_write_text`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, to_yaml(cfg))
