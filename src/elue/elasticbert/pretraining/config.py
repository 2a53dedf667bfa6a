"""The settings of a pre-training run: one flat dataclass, read from YAML or JSON, with `key=value`
overrides from the command line (`model_config.hidden_size=64`, `exit_groups=[[1,2],[2]]`)."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A pre-training setting is wrong (unknown key, wrong type, missing file...): the user's to fix."""


class NoUsableDocument(SettingsError):
    """A data stream without one document that makes a sentence pair (the reader names the corpus)."""


def one_line(err: BaseException) -> str:
    """The first line of an error's message (with its type, unless a plain ValueError)."""
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return (first if type(err) is ValueError else f"{type(err).__name__}: {first}")[:400]


def absolute_paths(paths: list[str]) -> list[str]:
    return [str(Path(p).expanduser().resolve()) for p in paths]


def _absolute_data_files(files: Any) -> Any:
    """`data_files` of a local builder (a path, a list of them, or a mapping of splits to either) with `~`
    expanded and made absolute; URLs (`https://`, `hf://`, ...) and anything else left as they are."""
    if isinstance(files, str):
        return files if "://" in files else str(Path(files).expanduser().resolve())
    if isinstance(files, list):
        return [_absolute_data_files(f) if isinstance(f, str) else f for f in files]
    if isinstance(files, dict):
        return {split: _absolute_data_files(f) for split, f in files.items()}
    return files


def absolute_hub_files(hub_datasets: Any) -> Any:
    """The `hub_datasets` entries with the `data_files` of `datasets`' local builders (`json`, `parquet`, `text`,
    `csv`, ...) absolute, `~` expanded, as for `train_files`: `load_dataset` would look for a literal `~` folder, a
    relative path depends on the folder the run starts in, and a resume compares the settings as strings. The
    `data_files` of a hub repository or a local dataset folder are relative to it and stay as they are."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if not isinstance(hub_datasets, list):
        return hub_datasets
    return [
        {**spec, "data_files": _absolute_data_files(spec["data_files"])}
        if isinstance(spec, dict)
        and spec.get("path") in _PACKAGED_DATASETS_MODULES
        and spec.get("data_files") is not None
        else spec
        for spec in hub_datasets
    ]


# the settings with a fixed set of values (a typo would otherwise surface deep inside the run)
CHOICES: dict[str, tuple[str, ...]] = {
    "trainable": ("all", "heads"),
    "optimizer": ("adamw", "lamb"),
    "mixed_precision": ("no", "bf16", "fp16", "auto"),
    "distributed": ("ddp", "fsdp"),
    "dropout_masks": ("auto", "inductor", "aten"),
    # the transformers schedules that need nothing beyond warm-up and total steps
    "lr_scheduler": (
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
        "inverse_sqrt",
    ),
}
#: what `report_to` supports (the CSV logs are always written)
REPORTERS = ("csv", "tensorboard")
#: the shortest sequence a pair fits in: [CLS] A [SEP] B [SEP] with a few tokens each
MIN_SEQ_LENGTH = 8
#: where lr_scheduler polynomial decays to (transformers' default, passed to it explicitly)
POLYNOMIAL_LR_END = 1e-7
# lower bounds of numeric settings (None passes where the type allows it)
_MINIMUM: dict[str, float] = {
    "per_device_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "max_steps": 1,
    "logging_steps": 1,
    "save_steps": 0,
    "eval_steps": 0,
    "eval_examples": 0,
    "stop_after_steps": 1,
    "save_total_limit": 0,
    "num_data_shards": 1,
    "shuffle_buffer": 0,
    "tokenize_batch_docs": 1,
    "warmup_steps": 0,
    "max_seq_length": MIN_SEQ_LENGTH,
    "learning_rate": 0,
    "weight_decay": 0,
    "max_grad_norm": 0,
    "sop_weight": 0,
    "seed": 0,  # numpy's and Accelerate's seeding take 0 .. 2**32 - 1
}
# settings that are fractions: (low, high, low included, high included); mlm_probability 0 would mask
# nothing (no MLM loss)
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "mlm_probability": (0, 1, False, True),
    "short_seq_prob": (0, 1, True, True),
    "warmup_ratio": (0, 1, True, False),
    "adam_beta1": (0, 1, True, False),
    "adam_beta2": (0, 1, True, False),
}
_LISTS = ("train_files", "eval_files", "hub_datasets", "report_to")
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
    #: Hugging Face datasets, each "id", "id:config" or {"path":..,"name":..,"split":..,"text_column":..,
    #: "records_per_document":..}
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
    #: with compile: who draws the hidden dropout masks, "inductor" (in its fused kernels) or "aten" (torch's
    #: bernoulli kernel, a quarter of the random-number work; `compile_regions`); "auto": aten on a GPU
    dropout_masks: str = "auto"
    cpu: bool = False
    output_dir: str = "runs/pretrain"
    save_steps: int = 500
    #: the newest checkpoints kept; None or 0 keeps every one
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

            try:
                text = Path(path).read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise SettingsError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
            except OSError as err:
                raise SettingsError(f"cannot read {path}: {err.strerror or err}") from err
            try:
                data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text) or {}
            except (ValueError, yaml.YAMLError) as err:
                raise SettingsError(f"{path} does not parse: {err}") from err
            if not isinstance(data, dict):
                raise SettingsError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        return cls.from_dict(data, overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: list[str] | None = None) -> PretrainConfig:
        data = copy.deepcopy(data)
        for item in overrides or []:
            apply_override(data, item)
        _check_plain(data)
        data = json.loads(json.dumps(data))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SettingsError(
                f"unknown pre-training settings: {', '.join(unknown)} (see --print-config for the known ones)"
            )
        cfg = cls(**data)
        cfg.check_types()
        return cfg

    def normalise(self) -> None:
        """Forgiving spellings: a string that reads as a number for a float (PyYAML reads `1e-3` as a string),
        one string or null for a list setting, the optimiser's name in any case."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "float" in str(f.type) and isinstance(value, str):
                try:
                    setattr(self, f.name, float(value))
                except ValueError:
                    pass  # reported by check_types
        for name in _LISTS:
            value = getattr(self, name)
            if value is None:
                setattr(self, name, [])
            elif isinstance(value, (str, dict)):
                setattr(self, name, [value])
        if isinstance(self.optimizer, str):
            self.optimizer = self.optimizer.lower()

    def check_types(self) -> None:
        """Scalar settings have their declared type (an int is accepted for a float), choices and ranges are
        valid, exit groups are lists of layers."""
        self.normalise()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_scalar(f.name, value, f.type)
            if not isinstance(value, str):
                continue
            given = value.lower() if f.name == "optimizer" else value  # the optimiser is matched case-blind
            if f.name in CHOICES and given not in CHOICES[f.name]:
                raise SettingsError(f"{f.name} must be one of {', '.join(CHOICES[f.name])}, not {value!r}")
        self.check_model_config()
        self.check_values()

    def check_values(self) -> None:
        """Numbers in range, list settings lists of the right things, exit groups well formed."""
        for name, low in _MINIMUM.items():
            value = getattr(self, name)
            if value is not None and not value >= low:
                raise SettingsError(f"{name} must be at least {low:g}, not {value!r}")
        if not self.seed < 2**32:
            raise SettingsError(f"seed must be below 2**32, not {self.seed!r}")
        if not self.adam_epsilon > 0:  # 0 divides by zero where a gradient's second moment is 0
            raise SettingsError(f"adam_epsilon must be positive, not {self.adam_epsilon!r}")
        if self.lr_scheduler == "polynomial" and not self.learning_rate > POLYNOMIAL_LR_END:
            raise SettingsError(
                f"lr_scheduler polynomial decays to {POLYNOMIAL_LR_END:g}: learning_rate must be above it, "
                f"not {self.learning_rate!r} (or choose another lr_scheduler)"
            )
        for name, (low, high, with_low, with_high) in _RANGES.items():
            value = getattr(self, name)
            low_ok = low <= value if with_low else low < value
            if not (low_ok and (value <= high if with_high else value < high)):
                left, right = "[" if with_low else "(", "]" if with_high else ")"
                raise SettingsError(f"{name} must be in {left}{low:g}, {high:g}{right}, not {value!r}")
        for name in ("train_files", "eval_files", "report_to"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SettingsError(f"{name}: expected a list of strings, got {value!r}")
        if not isinstance(self.hub_datasets, list):
            raise SettingsError(f"hub_datasets: expected a list, got {self.hub_datasets!r}")
        for spec in self.hub_datasets:
            _check_hub_spec(spec)
        unknown = [r for r in self.report_to if r not in REPORTERS]
        if unknown:
            raise SettingsError(
                f"report_to: {', '.join(unknown)} not supported (supported: {', '.join(REPORTERS)}; "
                "the CSV logs are always written)"
            )
        if not self.output_dir.strip():
            raise SettingsError("output_dir is empty: name the run's folder")
        if self.eval_steps and not (self.eval_files and self.eval_examples):
            # the trainer would silently evaluate nothing
            raise SettingsError(
                f"eval_steps {self.eval_steps} needs eval_files and eval_examples above 0 "
                f"(eval_files: {len(self.eval_files)} file(s), eval_examples: {self.eval_examples})"
            )
        if self.dropout_masks not in ("auto", "inductor") and not self.compile:
            # eager, the separate mask kernel would only add work: the setting is for the compiled step
            raise SettingsError(f"dropout_masks: {self.dropout_masks} needs compile: true")
        layers = None
        if self.model_name_or_path is None:  # a new model: its depth is known now
            layers = self.model_config.get("num_hidden_layers", 12)
            layers = layers if isinstance(layers, int) and layers > 0 else None
        self.resolved_exit_groups(layers)

    def check_model_config(self) -> None:
        """model_config is a mapping of ElasticBertConfig fields (the config itself accepts any key silently:
        a misspelt `residual_in_fp23` would otherwise change nothing)."""
        if not isinstance(self.model_config, dict):
            raise SettingsError(f"model_config: expected a mapping, got {self.model_config!r}")
        from ..configuration_elasticbert import ElasticBertConfig

        fields = {f.name: f.type for f in dataclasses.fields(ElasticBertConfig)}
        known = set(fields) | {"attn_implementation"}
        fixed = sorted({"num_output_layers", "max_output_layers"} & set(self.model_config))
        if fixed:  # pre-training puts an exit (MLM + SOP heads) on every layer
            raise SettingsError(
                f"model_config.{fixed[0]}: pre-training has an exit on every layer (num_hidden_layers); "
                "choose the exits trained together with exit_groups"
            )
        unknown = sorted(set(self.model_config) - known)
        if unknown:
            listed = ", ".join(sorted(known - {"transformers_version", "architectures"}))
            raise SettingsError(
                f"model_config: unknown ElasticBertConfig fields {', '.join(unknown)} (known: {listed})"
            )
        # values too: a wrong type would otherwise fail deep inside the model's construction, or its first step
        for key, value in self.model_config.items():
            kind = str(fields.get(key, "str | None"))
            if "float" in kind and isinstance(value, str):  # PyYAML reads 1e-12 as a string
                try:
                    value = self.model_config[key] = float(value)
                except ValueError:
                    pass  # reported just below
            _check_scalar(f"model_config.{key}", value, kind)
            if value is None:
                continue
            if key == "type_vocab_size" and value < 2:
                raise SettingsError(
                    f"model_config.type_vocab_size must be at least 2, not {value!r}: {TWO_TYPES}"
                )
            if key in _POSITIVE_MODEL_SIZES and value < 1:
                raise SettingsError(f"model_config.{key} must be at least 1, not {value!r}")
            if key.endswith("dropout_prob") and not 0 <= value < 1:
                raise SettingsError(f"model_config.{key} must be in [0, 1), not {value!r}")
            if key == "layer_norm_eps" and not value > 0:
                raise SettingsError(f"model_config.layer_norm_eps must be positive, not {value!r}")
            if key == "hidden_act":
                from transformers.activations import ACT2FN

                if value not in ACT2FN:
                    raise SettingsError(
                        f"model_config.hidden_act {value!r} is not an activation transformers knows "
                        f"(e.g. {', '.join(sorted(ACT2FN)[:8])}, ...)"
                    )

    def check_files(self) -> None:
        """The local inputs exist, and there is something to train on."""
        if not self.train_files and not self.hub_datasets:
            raise SettingsError("no training data: give train_files (local text) or hub_datasets")
        for key in ("train_files", "eval_files"):
            for path in getattr(self, key):
                if not Path(path).is_file():
                    raise SettingsError(f"{key}: {path} is not a file")
                if not _holds_text(Path(path)):
                    raise SettingsError(f"{key}: {path} holds no text (empty, or only blank lines)")
                bad = _not_utf8(Path(path))
                if bad:
                    raise SettingsError(f"{key}: {path} is not UTF-8 text ({bad}): convert it to UTF-8")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved_exit_groups(self, num_layers: int | None) -> list[list[int]] | None:
        """The exit groups as 0-based layer indices, or None for every exit on every step. With `num_layers`
        None only the form is checked (and None is returned for `default`)."""
        groups = self.exit_groups
        if groups is None or groups == [] or groups is False or groups in ("none", "all"):
            return None
        if groups == "default":
            return [[x - 1 for x in g] for g in default_exit_groups(num_layers)] if num_layers else None
        form = (
            "exit_groups: expected default, a list of lists of layers (e.g. [[1, 3], [2, 3]]), or for every "
            f"exit on every step all, none, null, false or [] ; got {groups!r}"
        )
        if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
            raise SettingsError(form)
        out = []
        for g in groups:
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in g):
                raise SettingsError(form)
            layers = sorted(set(g))
            if not layers:
                raise SettingsError(f"exit_groups: an empty group in {groups!r} (each group needs a layer)")
            if len(layers) != len(g):
                raise SettingsError(f"exit_groups: group {g} names a layer twice")
            if layers[0] < 1 or (num_layers is not None and layers[-1] > num_layers):
                top = num_layers if num_layers is not None else "N"
                raise SettingsError(f"exit group {g} outside layers 1..{top}")
            out.append([x - 1 for x in layers])
        return out if num_layers is not None else None

    def untrained_exits(self, num_layers: int) -> list[int]:
        """1-based exits that no group trains (their heads keep their initial weights)."""
        groups = self.resolved_exit_groups(num_layers)
        covered = {x for g in groups for x in g} if groups else set(range(num_layers))
        return [x + 1 for x in range(num_layers) if x not in covered]


#: what fixes a checkpoint's tensors: a loaded model keeps these (another size would load nothing or, for
#: more layers, add random ones on top of trained ones)
CHECKPOINT_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)
_POSITIVE_MODEL_SIZES = (*CHECKPOINT_SIZES, "max_output_layers", "num_output_layers")


#: why type_vocab_size must be at least 2
TWO_TYPES = "pre-training needs 2 token types (segment B of a sentence-order pair has token type 1)"


def _check_hub_spec(spec: Any) -> None:
    """A hub_datasets entry is "id", "id:config" or a mapping with a path (load_dataset's arguments) and
    optionally a text_column and records_per_document."""
    if isinstance(spec, str):
        return
    if not isinstance(spec, dict):
        raise SettingsError(
            f'hub_datasets: entry {spec!r} is not a dataset id ("id" or "id:config") or a mapping '
            "{path: .., name: .., split: .., text_column: ..}"
        )
    if not isinstance(spec.get("path"), str):
        raise SettingsError(
            f"hub_datasets: entry {spec!r} has no path (the dataset id or builder, e.g. json)"
        )
    column = spec.get("text_column", "text")
    if not isinstance(column, str) or not column:
        raise SettingsError(
            f"hub_datasets: entry {spec['path']!r}: text_column must be a column name, not {column!r}"
        )
    group = spec.get("records_per_document", 1)
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise SettingsError(
            f"hub_datasets: entry {spec['path']!r}: records_per_document must be a whole number >= 1, not {group!r}"
        )


def _holds_text(path: Path, chunk: int = 1 << 16) -> bool:
    """Whether a file has a character that is not white space (read only as far as the first one)."""
    try:
        with path.open("rb") as f:
            while block := f.read(chunk):
                if block.strip():
                    return True
    except OSError:
        return True  # unreadable: reported, with its reason, where the file is read
    return False


#: compressed files the `text` builder reads (their bytes are not the text)
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".7z")


def _not_utf8(path: Path, chunk: int = 1 << 16) -> str | None:
    """Why the start of a file is not UTF-8 text (e.g. "byte 0xe9 at offset 3"), or None: the whole file is read
    only in training; a file that is not UTF-8 at all (latin-1, a Windows "Unicode" file: UTF-16) is named here,
    not as a decoding error of the training data as a whole."""
    import codecs

    if path.name.lower().endswith(_COMPRESSED):
        return None
    try:
        with path.open("rb") as f:
            head = f.read(chunk)
    except OSError:
        return None  # reported, with its reason, where the file is read
    try:  # final=False: a character cut at the chunk's end is no error
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as err:
        return f"byte 0x{head[err.start]:02x} at offset {err.start}"
    return None


def _check_scalar(name: str, value: Any, kind: Any) -> None:
    """`value` has the scalar type `kind` declares ("int", "float | None"...; an int passes for a float, a
    bool never for a number). Lists, dicts and other types are left to the code that uses them."""
    kinds = [k.strip() for k in str(kind).split("|")]
    if value is None and "None" in kinds:
        return
    wanted = [_SCALARS[k] for k in kinds if k in _SCALARS]
    if not wanted or len(kinds) > len(wanted) + ("None" in kinds):
        return
    ok = any(isinstance(value, t) and not (t is not bool and isinstance(value, bool)) for t in wanted) or (
        float in wanted and isinstance(value, int) and not isinstance(value, bool)
    )
    if not ok:
        raise SettingsError(f"{name}: expected {' or '.join(kinds)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # YAML's .inf passes every lower bound
        raise SettingsError(f"{name}: expected a finite number, got {value!r}")


def _check_plain(value: Any, where: str = "") -> None:
    """Settings are what JSON holds (strings, numbers, booleans, null, lists, mappings): PyYAML reads an unquoted
    2026-11-27 as a date, which would otherwise fail as a JSON TypeError traceback."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            if not isinstance(key, str):
                raise SettingsError(
                    f"{name}: a setting's name must be text, not {type(key).__name__} {key!r}"
                )
            _check_plain(item, name)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(value, (datetime.date, datetime.time)):
        raise SettingsError(f'{where}: {value} reads as a date in YAML: quote it ("{value}")')
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise SettingsError(f"{where}: {value!r} is not a string, number, list or mapping")


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
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parts[: i + 1])
            raise SettingsError(f"override {item!r}: {where} is not a mapping (it is {node!r})")
    node[parts[-1]] = value
