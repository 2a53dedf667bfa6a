"""The settings of a pre-training run: one flat dataclass, read from YAML or JSON, with `key=value`
overrides from the command line (`model_config.hidden_size=64`, `exit_groups=[[1,2],[2]]`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A pre-training setting is wrong (unknown key, wrong type, missing file...): the user's to fix."""


# the settings with a fixed set of values (a typo would otherwise surface deep inside the run)
CHOICES: dict[str, tuple[str, ...]] = {
    "trainable": ("all", "heads"),
    "optimizer": ("adamw", "lamb"),
    "mixed_precision": ("no", "bf16", "fp16", "auto"),
    "distributed": ("ddp", "fsdp"),
}
_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass
class PretrainConfig:
    # ---- model -------------------------------------------------------------------------------
    #: an ElasticBERT checkpoint (or a BERT one, converted on load) to continue from; None = new model
    model_name_or_path: str | None = None
    #: ElasticBertConfig keyword arguments for a new model (or overrides of the loaded config)
    model_config: dict[str, Any] = field(default_factory=dict)
    #: tokenizer (a fast one); defaults to model_name_or_path
    tokenizer_name_or_path: str | None = None
    #: exit groups, 1-based layer numbers; one group is optimised per step, in turn.
    #: "default" = odd layers + top and even layers + top ({1,3,..,11,12},{2,4,..,12} for 12 layers);
    #: None or [] = every exit on every step (no grouped training)
    exit_groups: Any = "default"
    gradient_equilibrium: bool = True
    sop_weight: float = 1.0
    #: "all", or "heads": train only the exits (poolers, MLM and SOP heads) on a frozen encoder, e.g. to fit
    #: new heads to a converted BERT before measuring it
    trainable: str = "all"

    # ---- data --------------------------------------------------------------------------------
    #: local text files (documents separated by blank lines; one or more sentences a line)
    train_files: list[str] = field(default_factory=list)
    #: Hugging Face datasets, each "id", "id:config" or {"path":..,"name":..,"split":..,"text_column":..}
    hub_datasets: list[Any] = field(default_factory=list)
    text_column: str = "text"
    #: held-out local text files for the per-exit evaluation
    eval_files: list[str] = field(default_factory=list)
    eval_examples: int = 256
    max_seq_length: int = 128
    #: probability of a shorter target length (ALBERT/BERT short_seq_prob)
    short_seq_prob: float = 0.1
    mlm_probability: float = 0.15
    #: independent data streams; the global batch takes an equal share of each. Results are identical
    #: for every number of processes that divides it. None = number of processes.
    num_data_shards: int | None = None
    shuffle_buffer: int = 0
    #: documents tokenised per call of the (Rust, multi-threaded) fast tokenizer
    tokenize_batch_docs: int = 256

    # ---- optimisation ------------------------------------------------------------------------
    seed: int = 42
    per_device_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_steps: int = 1000
    optimizer: str = "adamw"  # adamw | lamb
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    max_grad_norm: float = 1.0
    lr_scheduler: str = "linear"  # any transformers.get_scheduler name
    warmup_steps: int = 0
    warmup_ratio: float = 0.0

    # ---- engine ------------------------------------------------------------------------------
    #: "no" | "bf16" | "fp16" | "auto" (= bf16 on a GPU that supports it, else no)
    mixed_precision: str = "auto"
    distributed: str = "ddp"  # ddp | fsdp
    #: torch.compile the embeddings, encoder layers and MLM heads (`compile_regions`; docs/pretraining.md)
    compile: bool = False
    compile_backend: str = "inductor"
    cpu: bool = False
    output_dir: str = "runs/pretrain"
    save_steps: int = 500
    save_total_limit: int | None = 2
    #: "latest" = newest checkpoint in output_dir if any; a path; or None
    resume_from_checkpoint: str | None = "latest"
    logging_steps: int = 10
    eval_steps: int = 0
    report_to: list[str] = field(default_factory=lambda: ["csv"])  # csv, tensorboard
    progress_bar: bool = True
    #: stop after this many steps of this invocation (to test kill-and-resume); None = run to max_steps
    stop_after_steps: int | None = None

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path | None, overrides: list[str] | None = None) -> PretrainConfig:
        data: dict[str, Any] = {}
        if path is not None:
            import yaml

            text = Path(path).read_text()
            try:
                data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text) or {}
            except (ValueError, yaml.YAMLError) as err:
                raise SettingsError(f"{path} does not parse: {err}") from err
            if not isinstance(data, dict):
                raise SettingsError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        return cls.from_dict(data, overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: list[str] | None = None) -> PretrainConfig:
        data = json.loads(json.dumps(data))
        for item in overrides or []:
            apply_override(data, item)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SettingsError(
                f"unknown pre-training settings: {', '.join(unknown)} (see --print-config for the known ones)"
            )
        cfg = cls(**data)
        cfg.check_types()
        return cfg

    def check_types(self) -> None:
        """Scalar settings have their declared type (an int is accepted for a float) and choices are valid."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kinds = [k.strip() for k in str(f.type).split("|")]
            if value is None and "None" in kinds:
                continue
            wanted = [_SCALARS[k] for k in kinds if k in _SCALARS]
            if not wanted or len(kinds) > len(wanted) + ("None" in kinds):
                continue  # lists, dicts, Any: checked where they are used
            ok = any(
                isinstance(value, t) and not (t is not bool and isinstance(value, bool)) for t in wanted
            ) or (float in wanted and isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                names = " or ".join(k for k in kinds)
                raise SettingsError(f"{f.name}: expected {names}, got {value!r}")
            given = value.lower() if f.name == "optimizer" else value  # the optimiser is matched case-blind
            if f.name in CHOICES and given not in CHOICES[f.name]:
                raise SettingsError(f"{f.name} must be one of {', '.join(CHOICES[f.name])}, not {value!r}")
        self.check_model_config()

    def check_model_config(self) -> None:
        """model_config is a mapping of ElasticBertConfig fields (the config itself accepts any key silently:
        a misspelt `residual_in_fp23` would otherwise change nothing)."""
        if not isinstance(self.model_config, dict):
            raise SettingsError(f"model_config: expected a mapping, got {self.model_config!r}")
        from ..configuration_elasticbert import ElasticBertConfig

        known = {f.name for f in dataclasses.fields(ElasticBertConfig)} | {"attn_implementation"}
        unknown = sorted(set(self.model_config) - known)
        if unknown:
            fields = ", ".join(sorted(known - {"transformers_version", "architectures"}))
            raise SettingsError(
                f"model_config: unknown ElasticBertConfig fields {', '.join(unknown)} (known: {fields})"
            )

    def check_files(self) -> None:
        """The local inputs exist, and there is something to train on."""
        if not self.train_files and not self.hub_datasets:
            raise SettingsError("no training data: give train_files (local text) or hub_datasets")
        for key in ("train_files", "eval_files"):
            for path in getattr(self, key):
                if not Path(path).is_file():
                    raise SettingsError(f"{key}: {path} is not a file")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved_exit_groups(self, num_layers: int) -> list[list[int]] | None:
        """The exit groups as 0-based layer indices, or None for every exit on every step."""
        groups = self.exit_groups
        if groups is None or groups == [] or groups in ("none", "all", False):
            return None
        if groups == "default":
            groups = default_exit_groups(num_layers)
        out = []
        for g in groups:
            layers = sorted({int(x) for x in g})
            if not layers or layers[0] < 1 or layers[-1] > num_layers:
                raise SettingsError(f"exit group {g} outside layers 1..{num_layers}")
            out.append([x - 1 for x in layers])
        return out


def default_exit_groups(num_layers: int) -> list[list[int]]:
    """Odd layers plus the top one, even layers plus the top one (1-based)."""
    odd = sorted({*range(1, num_layers + 1, 2), num_layers})
    even = sorted({*range(2, num_layers + 1, 2), num_layers})
    return [odd, even] if num_layers > 1 else [odd]


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (numbers, lists, null...)."""
    import yaml

    if "=" not in item:
        raise SettingsError(f"override {item!r} is not key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise SettingsError(f"override {item!r}: the value does not parse as YAML: {err}") from err
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
