"""A finished run folder back in Python (:class:`Run`), and two runs side by side (:func:`compare`).

>>> run = Run.load("runs/paper-20261126-101500")  # doctest: +SKIP
>>> run.neurons.head()  # doctest: +SKIP
  lang  layer  neuron     score
0   en     17     411  0.201633
>>> run.ablation_delta.loc["fr", "fr"]  # doctest: +SKIP
0.52

Everything is read from the files the runner wrote (``config.yaml``, ``summary.json``,
``layer_profile.csv``, ``selected_neurons.csv``, ``ablation.json``, ``stats/``), so a run
computed on another machine, or months ago, loads the same way. Parts a run did not compute
(``ablation.enabled: false``, say) are ``None``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig
from mlinguality.run.markdown import markdown_table

logger = logging.getLogger(__name__)

__all__ = ["Comparison", "Run", "compare", "incomparable"]


def _json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise MlingualityError(
            f"{path}: not valid JSON ({_first_line(error)}); {_DAMAGED}"
        ) from None


def _csv(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as error:  # pandas' ParserError is a ValueError
        raise MlingualityError(
            f"{path}: not a readable CSV ({_first_line(error)}); {_DAMAGED}"
        ) from None


_DAMAGED = "was it edited or cut short? rerun the stage that writes it"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def verify_run(path: Path) -> None:
    """Check every finished stage's files against the sizes and sha256 sums in ``stages.json``.

    Raises:
        MlingualityError: naming the first file that differs (or a missing or unreadable record).
    """
    from mlinguality.run.stage_cache import damage

    record = path / "stages.json"
    skip = "or Run.load(path, verify=False) to read the files as they are"
    try:
        entries = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:  # no stage ever finished: no outputs to check
        return
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise MlingualityError(f"{record}: unreadable ({_first_line(error)}); {skip}") from None
    if not isinstance(entries, dict):
        raise MlingualityError(f"{record}: not a mapping of stages; {skip}")
    for stage, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("status", "done") != "done":
            continue  # an unfinished stage records no checksums; its files are not read back
        problem = damage(path, entry.get("files"))
        if problem is not None:
            raise MlingualityError(
                f"run {path}: stage {stage}'s {problem} (by the record in stages.json: edited "
                f"since?); recompute it with `mlinguality run --resume {path}`, {skip}"
            )


@dataclass
class Run:
    """A finished (or partly finished) run folder.

    Attributes:
        path: The run folder.
        config: The resolved :class:`~mlinguality.run.config.RunConfig` it ran with.
        summary: ``summary.json``: the headline numbers by namespace (``run``, ``selectivity``,
            ``ablation``, ``perf``); empty if the report stage never ran.
        profile: ``layer_profile.csv``: one row per (layer, metric, pair) with ``value``,
            confidence interval, permutation ``p_value``, ``null_mean`` and ``chance``.
        u_shape: ``u_shape.csv``: the U-shape statistic per metric and pair.
        neurons: The selected neurons, one row per (``lang``, ``layer``, ``neuron``, ``score``);
            ``score`` is the selection metric's (``neurons_meta["score"]`` says what it means).
        neurons_meta: Selection metric, rate and the meaning of ``score``.
        ablation: ``ablation.json``: baseline and ablated bits per byte, deltas, dominance.
    """

    path: Path
    config: RunConfig
    summary: dict[str, Any] = field(default_factory=dict)
    profile: pd.DataFrame | None = None
    u_shape: pd.DataFrame | None = None
    neurons: pd.DataFrame | None = None
    neurons_meta: dict[str, Any] = field(default_factory=dict)
    ablation: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Run:
        """Read a run folder written by ``mlinguality run`` (or :func:`run_experiment`).

        Args:
            path: The run folder.
            verify: Check every finished stage's files against the sha256 sums recorded in
                ``stages.json`` first, so a hand-edited ``selected_neurons.csv`` is refused
                rather than served beside masks that disagree with it (``False``: read the
                files as they are).

        Raises:
            MlingualityError: ``path`` is not a run folder (no ``config.yaml``), or (``verify``)
                a file differs from its record, naming it.
        """
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise MlingualityError(f"run {path}: no config.yaml there (not a run folder)")
        if verify:
            verify_run(path)
        meta = _json(path / "selected_neurons.json") or {}
        return cls(
            path=path,
            config=RunConfig.load(path / "config.yaml"),
            summary=_json(path / "summary.json") or {},
            profile=_csv(path / "layer_profile.csv"),
            u_shape=_csv(path / "u_shape.csv"),
            neurons=_load_neurons(path),
            neurons_meta={k: v for k, v in meta.items() if k not in ("neurons", "columns")},
            ablation=_json(path / "ablation.json"),
        )

    @property
    def name(self) -> str:
        """The run folder's name (``paper-20261126-101500``)."""
        return self.path.name

    @property
    def langs(self) -> list[str]:
        """The run's languages, in config order."""
        return list(self.config.corpus.langs)

    @cached_property
    def stats(self) -> dict:
        """``{lang: ActivationStats}`` of the selection split (loaded on first access)."""
        from mlinguality.activations.stats import load_stats

        if not (self.path / "stats").is_dir():
            raise MlingualityError(f"run {self.path}: no stats/ (the collect stage never finished)")
        return load_stats(self.path / "stats", self.langs)

    @cached_property
    def masks(self) -> dict:
        """``{lang: Bool[layer, d_mlp]}``: the selected neurons as masks for the ablation hooks."""
        from mlinguality.run.steps.select import load_masks

        if not (self.path / "selected_neurons.safetensors").exists():
            raise MlingualityError(f"run {self.path}: no selected neurons (select never ran)")
        saved = load_masks(self.path)
        return {lang: saved[lang] for lang in self.langs if lang in saved}

    @property
    def ablation_delta(self) -> pd.DataFrame | None:
        """Change in bits per byte: rows = whose neurons were ablated, columns = evaluated language."""
        return self._ablation_frame("delta_bits_per_byte")

    @property
    def ablation_bits_per_byte(self) -> pd.DataFrame | None:
        """Bits per byte under each ablation (rows) for each evaluated language (columns)."""
        return self._ablation_frame("bits_per_byte")

    def _ablation_frame(self, key: str) -> pd.DataFrame | None:
        if self.ablation is None:
            return None
        frame = pd.DataFrame(
            self.ablation[key], index=self.ablation["rows"], columns=self.ablation["langs"]
        )
        return frame.astype(float)

    @cached_property
    def _cards(self) -> dict[tuple[int, int, str], Any]:
        from mlinguality.dashboards.cards import NeuronCard

        path = self.path / "neurons" / "neurons.json"
        if not path.is_file():
            raise MlingualityError(
                f"run {self.path}: no neurons/neurons.json (the examples stage never ran; "
                "run it with examples.enabled=true)"
            )
        record = json.loads(path.read_text(encoding="utf-8"))
        return {
            (entry["layer"], entry["neuron"], entry["set"]): NeuronCard(entry, record["langs"])
            for entry in record["neurons"]
        }

    def neuron(self, layer: int, index: int):
        """The :class:`~mlinguality.dashboards.cards.NeuronCard` of neuron ``index`` of ``layer``
        (its top contexts, histograms and logit effect; renders as HTML in a notebook)."""
        for kind in ("selected", "listed", "random"):
            card = self._cards.get((layer, index, kind))
            if card is not None:
                return card
        raise MlingualityError(
            f"run {self.path}: no card for L{layer} N{index} (cards exist for the selected, the "
            "random control and the examples.neurons neurons)"
        )

    def neuron_cards(self, set: str | None = None) -> list:
        """Every card (or those of one ``set``: ``selected``, ``random``, ``listed``)."""
        return [card for key, card in self._cards.items() if set is None or key[2] == set]

    def neuron_table(self) -> pd.DataFrame:
        """One row per card: set, language, layer, neuron, score, firing rates, the own-language
        share of its top promoted tokens and those tokens."""
        from mlinguality.dashboards.cards import neuron_table

        return neuron_table(self.neuron_cards())

    @property
    def output_language(self) -> pd.DataFrame | None:
        """``neurons/output_language.csv``: do a language's neurons promote its tokens,
        against the activity-matched random neurons (None without the examples stage)."""
        return _csv(self.path / "neurons" / "output_language.csv")

    def layer_scores(self, metric: str | None = None) -> pd.DataFrame:
        """Per-layer score of ``metric`` (default: the first configured), layers x pairs."""
        if self.profile is None:
            raise MlingualityError(f"run {self.path}: no layer_profile.csv (score never ran)")
        metric = metric or self.config.selectivity.metrics[0]
        rows = self.profile[self.profile["metric"] == metric]
        if not len(rows):
            known = ", ".join(self.profile["metric"].unique())
            raise MlingualityError(f"run {self.path}: no metric {metric!r} (has {known})")
        return rows.pivot(index="layer", columns="pair", values="value")

    def __repr__(self) -> str:
        parts = [f"model={self.config.model.spec!r}", f"langs={self.langs}"]
        if self.neurons is not None:
            parts.append(f"neurons={len(self.neurons)}")
        return f"Run({self.name!r}, {', '.join(parts)})"


def _load_neurons(path: Path) -> pd.DataFrame | None:
    """``selected_neurons.csv``, or (older runs) the table rebuilt from the masks without scores."""
    table = _csv(path / "selected_neurons.csv")
    if table is not None or not (path / "selected_neurons.safetensors").exists():
        return table
    from mlinguality.run.steps.select import load_masks
    from mlinguality.selectivity.neurons import neuron_table

    return neuron_table(load_masks(path))


# --- comparing two runs -----------------------------------------------------------------------


@dataclass
class Comparison:
    """Two runs side by side (``b`` against ``a``).

    Attributes:
        a: The first run.
        b: The second run.
        profile: Per (metric, pair, layer): ``value_a``, ``value_b`` and ``diff`` (b - a), for
            the metrics and pairs both runs scored.
        overlap: Per language: selected neurons in each run, in both, and their Jaccard index.
        ablation: Change in bits per byte, ``b - a``, for the rows and languages both ablated.
    """

    a: Run
    b: Run
    profile: pd.DataFrame
    overlap: pd.DataFrame
    ablation: pd.DataFrame | None

    def markdown(self) -> str:
        """A short Markdown report of the three comparisons."""
        lines = [f"# `{self.b.name}` against `{self.a.name}`", ""]
        differs = incomparable(self.a, self.b)
        if differs:
            lines += [f"**Not like for like**: {differs}.", ""]
        changed = _config_diff(self.a.config.to_dict(), self.b.config.to_dict())
        if changed:
            lines += ["Config differences:", ""]
            lines += [f"- `{key}`: {old!r} -> {new!r}" for key, (old, new) in changed.items()]
            lines.append("")
        if len(self.profile):
            mean = self.profile.groupby(["metric", "pair"], sort=False)[
                ["value_a", "value_b", "diff"]
            ].mean()
            lines += ["## Per-layer profile (mean over layers)", ""]
            lines += markdown_table(mean.reset_index())
            lines.append("")
        lines += ["## Selected neurons", ""]
        lines += markdown_table(self.overlap)
        if self.ablation is not None:
            lines += ["", "## Ablation: change in bits per byte, b - a", ""]
            lines += markdown_table(self.ablation.reset_index(names="ablated"))
        return "\n".join(lines) + "\n"

    def plot_profile(self, path: str | Path) -> Path:
        """The two per-layer profiles overlaid: one panel per metric, a line per run and pair."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metrics = list(dict.fromkeys(self.profile["metric"]))
        fig, axes = plt.subplots(
            1, max(len(metrics), 1), figsize=(4 * max(len(metrics), 1), 3), squeeze=False
        )
        for ax, metric in zip(axes[0], metrics, strict=False):
            rows = self.profile[self.profile["metric"] == metric]
            for pair, group in rows.groupby("pair", sort=False):
                (line,) = ax.plot(group["layer"], group["value_a"], label=f"{pair} a")
                ax.plot(
                    group["layer"],
                    group["value_b"],
                    ls="--",
                    color=line.get_color(),
                    label=f"{pair} b",
                )
            ax.set_title(metric, fontsize=9)
            ax.set_xlabel("layer")
        axes[0][0].legend(fontsize=6)
        fig.suptitle(f"a = {self.a.name}, b = {self.b.name}", fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def compare(a: Run | str | Path, b: Run | str | Path) -> Comparison:
    """Compare two runs: profile overlay, neuron-set overlap, ablation deltas.

    Args:
        a: A :class:`Run` or a run folder.
        b: Another one; differences are ``b - a``.
    """
    a = a if isinstance(a, Run) else Run.load(a)
    b = b if isinstance(b, Run) else Run.load(b)
    differs = incomparable(a, b)
    if differs:
        logger.warning(
            "compare %s %s: %s; only the languages, pairs and layers both share are set side "
            "by side, and their numbers are not like for like",
            a.path,
            b.path,
            differs,
        )
    profile = pd.DataFrame(columns=["metric", "pair", "layer", "value_a", "value_b", "diff"])
    if a.profile is not None and b.profile is not None:
        keys = ["metric", "pair", "layer"]
        profile = a.profile[[*keys, "value"]].merge(
            b.profile[[*keys, "value"]], on=keys, suffixes=("_a", "_b")
        )
        profile["diff"] = profile["value_b"] - profile["value_a"]
    return Comparison(a, b, profile, _overlap(a, b), _ablation_diff(a, b))


def _model_of(run: Run) -> str:
    spec = run.config.model.spec
    tiny = spec == "tiny" or spec.startswith("tiny:")
    return f"{spec} (seed {run.config.seed})" if tiny else spec  # a tiny model is its seed


def incomparable(a: Run, b: Run) -> str:
    """What makes two runs' numbers incomparable (other models or languages), or ``""``.

    The model is ``model.spec`` (a tiny model's weights are its seed too); the languages are
    ``corpus.langs`` as a set (their order only changes the reference language).
    """
    differs = []
    if _model_of(a) != _model_of(b):
        differs.append(f"models differ ({_model_of(a)!r} vs {_model_of(b)!r})")
    if set(a.langs) != set(b.langs):
        differs.append(f"languages differ ({','.join(a.langs)} vs {','.join(b.langs)})")
    return " and ".join(differs)


def _neuron_sets(run: Run) -> dict[str, set[tuple[int, int]]]:
    if run.neurons is None:
        return {}
    return {
        str(lang): set(zip(rows["layer"], rows["neuron"], strict=True))
        for lang, rows in run.neurons.groupby("lang", sort=False)
    }


def _overlap(a: Run, b: Run) -> pd.DataFrame:
    sets_a, sets_b = _neuron_sets(a), _neuron_sets(b)
    rows = []
    for lang in dict.fromkeys([*a.langs, *b.langs]):
        one, two = sets_a.get(lang, set()), sets_b.get(lang, set())
        union = len(one | two)
        rows.append(
            {
                "lang": lang,
                "n_a": len(one),
                "n_b": len(two),
                "n_both": len(one & two),
                "jaccard": len(one & two) / union if union else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["lang", "n_a", "n_b", "n_both", "jaccard"])


def _ablation_diff(a: Run, b: Run) -> pd.DataFrame | None:
    delta_a, delta_b = a.ablation_delta, b.ablation_delta
    if delta_a is None or delta_b is None:
        return None
    rows = [row for row in delta_a.index if row in delta_b.index]
    cols = [col for col in delta_a.columns if col in delta_b.columns]
    return delta_b.loc[rows, cols] - delta_a.loc[rows, cols]


def _config_diff(a: dict, b: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for key in dict.fromkeys([*a, *b]):
        name = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out.update(_config_diff(a[key], b[key], name + "."))
        elif a.get(key) != b.get(key) and key != "name":
            out[name] = (a.get(key), b.get(key))
    return out
