"""The strict run configuration: presets in ``c2fnas/configs/*.yaml``, overrides from a YAML file.

Every field has the paper's value unless a preset says otherwise; unknown keys are errors, so a
typo in an override file never silently falls back to a default.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from c2fnas.data.splits import NUM_FOLDS

PRESETS = ("paper", "cpu", "smoke")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
SearchMode = Literal["coarse", "fine", "none"]
CandidateScore = Literal["best", "final", "last3"]
LearningRateDecay = Literal["step", "poly"]
Augmentation = Literal["paper", "nnunet"]
"""What scores a coarse candidate; see ``SearchConfig.score``."""
"""What a run searches; see ``SearchConfig.mode``."""


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Patch sampling. ``batch_size`` is the global batch, split evenly over DDP processes."""

    spacing: tuple[float, float, float] | None = None
    """Target voxel spacing in mm (X, Y, Z) of preprocessing; None: the fingerprint's default
    (1 mm, or the median where that is coarser). ``c2fnas plan`` sets it from the data."""
    patch: tuple[int, int, int] = (96, 96, 96)
    batch_size: int = Field(8, ge=1)
    foreground_oversample: float = Field(0.33, ge=0.0, le=1.0)
    workers: int = Field(0, ge=0)
    augmentation: Augmentation = "paper"
    """``paper``: random flips and quarter turns in the X-Y plane (``data.loader.augment``);
    ``nnunet``: those plus nnU-Net-like rotation, scaling and intensity changes
    (``data.augment``). The default keeps the paper's recipe and plans written before the setting
    existed; ``c2fnas plan`` chooses from ``benchmarks/levers.py``'s measurements."""

    @model_validator(mode="after")
    def _spacing_positive(self) -> DataConfig:
        if self.spacing is not None and min(self.spacing) <= 0:
            raise ValueError(f"spacing {list(self.spacing)}: every value must be > 0 mm")
        return self

    @model_validator(mode="after")
    def _patch_divisible(self) -> DataConfig:
        if any(side <= 0 or side % 16 for side in self.patch):
            raise ValueError(
                f"patch {list(self.patch)}: every side must be a positive multiple of 16"
            )
        return self


class TrainingConfig(_Strict):
    """SGD with linear warm-up and step decay, counted in iterations (paper Sec. 4.1).

    ``iterations``/``milestones`` are the deployment schedule used by ``c2fnas train``; the search
    uses ``SearchConfig.iterations``/``milestones`` through ``RunConfig.for_search``.
    """

    iterations: int = Field(40000, ge=1)
    milestones: tuple[int, ...] = (16000, 32000)
    gamma: float = Field(0.5, gt=0.0)
    lr_decay: LearningRateDecay = "step"
    """``step``: x ``gamma`` at each milestone (the paper); ``poly``: after the warm-up the rate
    falls as ``(1 - t)**poly_exponent`` of the remaining fraction ``t`` of iterations, to 0 at
    the end (nnU-Net's schedule); milestones and gamma are then unused."""
    poly_exponent: float = Field(0.9, gt=0.0)
    deep_supervision: bool = False
    """Add a 1x1x1 logits head to the last cell of each decoder level above the deepest and train
    on the weighted sum of the losses at every resolution (nnU-Net's default; the heads are
    dropped from the saved model, so prediction is unchanged). ``training.deep_supervision``."""
    learning_rate: float = Field(0.02, gt=0.0)
    warmup_start_lr: float = Field(0.0025, ge=0.0)
    warmup_iterations: int = Field(1000, ge=0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(4e-5, ge=0.0)
    precision: Precision = "auto"
    compile: bool | Literal["auto"] = "auto"
    """``torch.compile`` the training step (``c2fnas.accel.compile``): ``auto`` compiles on a
    GPU for schedules of 2000 iterations or more, where fusing the memory-bound layers and
    replaying CUDA graphs may pay back the time compiling takes, and not on a CPU, where the
    project's C++ kernels already fuse the norms. A supernet always trains eagerly."""
    validate_every: int = Field(1000, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    stride: int | tuple[int, int, int] = 16
    """Sliding-window step in voxels for validation and prediction (overlap 1 - stride/patch),
    one for every axis or one per axis (anisotropic data, e.g. the paper's Prostate [16, 16, 4])."""
    tta: bool = False
    """Test-time mirroring when ``c2fnas run`` predicts (8 passes per window): on where time
    allows (the ``paper`` preset, GPUs), off on small CPUs."""
    window_batch: int = Field(4, ge=1)
    seed: int = 0
    tensorboard: bool = True
    folds: tuple[int, ...] = tuple(range(NUM_FOLDS))
    """The folds ``c2fnas run`` trains (``--folds`` overrides): all five in the paper; a plan
    under a short time budget trains fewer, each long enough to learn."""

    @field_validator("folds")
    @classmethod
    def _known_folds(cls, folds: tuple[int, ...]) -> tuple[int, ...]:
        known = set(range(NUM_FOLDS))
        if not folds or list(folds) != sorted(set(folds)) or not set(folds) <= known:
            raise ValueError(f"folds {list(folds)}: distinct, increasing, from 0..{NUM_FOLDS - 1}")
        return folds

    @model_validator(mode="after")
    def _stride_positive(self) -> TrainingConfig:
        steps = (self.stride,) if isinstance(self.stride, int) else self.stride
        if min(steps) < 1:
            raise ValueError(f"stride {self.stride}: every step must be >= 1 voxel")
        return self

    @model_validator(mode="after")
    def _milestones_sorted(self) -> TrainingConfig:
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones {list(self.milestones)} must be strictly increasing")
        return self


class SearchConfig(_Strict):
    """The search budget (paper Sec. 3.3-3.4); the fine stage trains 2x ``iterations``."""

    coarse_networks: int = Field(50, ge=1)
    clusters: int = Field(8, ge=1)
    fine_candidates: int = Field(2000, ge=1)
    random_cluster_probability: float = Field(0.2, ge=0.0, le=1.0)
    iterations: int = Field(20000, ge=1)
    milestones: tuple[int, ...] = (8000, 16000)
    fine_stride: int = Field(48, ge=1)
    width: float = Field(1.0, gt=0.0)
    """Width multiplier of every searched and finally trained network (paper: 1.0)."""
    scale_widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    """The third stage's grid (paper Sec. 5.3), used when ``c2fnas run`` includes ``scale``."""
    mode: SearchMode = "coarse"
    """``coarse``: Algorithm 1, then the fine stage on its best topology (the paper); ``fine``:
    the fine stage alone on C2FNAS-Panc's topology; ``none``: C2FNAS-Panc trained without a
    search. ``c2fnas plan`` chooses it from the budget (``costs.solve.choose_search``)."""
    score: CandidateScore = "best"
    """What scores a coarse candidate: its best periodic validation Dice (``best``, the
    default), the Dice of its final weights (``final``, as in the paper), or the mean of its last
    three validations (``last3``: less of one validation's luck). The default keeps the scores of
    trial stores written before the setting existed comparable with new ones;
    ``benchmarks/search_landscape.py`` measures how well each ranks topologies."""


class RunConfig(_Strict):
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    search: SearchConfig = SearchConfig()

    def for_search(self, iterations_factor: int = 1) -> RunConfig:
        """This configuration with the search schedule (x ``iterations_factor``) for training."""
        training = self.training.model_copy(
            update={
                "iterations": self.search.iterations * iterations_factor,
                "milestones": tuple(m * iterations_factor for m in self.search.milestones),
            }
        )
        return self.model_copy(update={"training": TrainingConfig(**training.model_dump())})

    def with_fields(self, section: str, **values: Any) -> RunConfig:
        """This configuration with fields of one section replaced (e.g. from a command-line
        option), validated like a file: ``ConfigError`` names the field."""
        data = _merge(self.model_dump(mode="json"), {section: values})
        try:
            return RunConfig.model_validate(data)
        except ValidationError as error:
            raise ConfigError(f"command-line option: {_describe(error)}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    return data


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
    )


def preset_text(name: str) -> str:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {list(PRESETS)}")
    return resources.files("c2fnas.configs").joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def load_config(preset: str = "paper", override: str | Path | None = None) -> RunConfig:
    """A preset, then the fields of an optional YAML file on top; errors name the file and field."""
    data = _read_yaml(preset_text(preset), f"preset {preset}")
    source = f"preset {preset}"
    if override is not None:
        path = Path(override)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
        data = _merge(data, _read_yaml(text, str(path)))
        source = str(path)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None


def read_config(path: str | Path) -> RunConfig:
    """Read a resolved configuration saved in a run folder (no preset underneath)."""
    path = Path(path)
    try:
        data = _read_yaml(path.read_text(encoding="utf-8"), str(path))
        return RunConfig.model_validate(data)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except ValidationError as error:
        raise ConfigError(f"{path}: {_describe(error)}") from None
