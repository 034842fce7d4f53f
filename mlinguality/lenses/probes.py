"""Language-ID probes per layer: held-out accuracy, a control task, and the online code length.

A probe is a multinomial logistic regression on one layer's example-mean residual
(``example_resid_mean``), its features standardized with the training set's mean and standard
deviation, fit in float64 by L-BFGS from zero: the objective of scikit-learn's
``LogisticRegression(C=C, solver="lbfgs")`` with more than two classes,
``sum_i CE_i + ||W||^2 / (2 C)`` (bias unpenalized). It is convex, so the fit is deterministic
and matches scikit-learn's to the optimiser's tolerance. (With two languages scikit-learn fits
one weight vector, a binomial model whose penalty is twice this one's.)

Accuracy saturates: linear probes identify the language at nearly every layer (METHODS.md). So
:func:`language_probe` also reports

- a **control task** (Hewitt & Liang 2019): the languages of each training example's
  translations are shuffled among them (one seeded permutation per example), so the labels are
  balanced and carry no language; a probe trained on them and scored on held-out examples
  (shuffled the same way) is at chance by construction, and ``control_train_accuracy`` shows
  how much of the training set the probe can memorize. ``selectivity = accuracy -
  control_accuracy``;
- the **online (prequential) code length** (Voita & Titov 2020) of the training labels in
  bits: the examples in a seeded order, cut at ``fractions`` of them; the first block is sent
  with the uniform code (``log2 K`` bits a label), each later block with the probe fit
  (standardization included) on everything before it. ``compression`` is the uniform code's
  length over the online one: 1 means nothing learnable, larger means the language is
  extractable from fewer examples, and it keeps growing where accuracy has saturated. Every
  translation of an example falls in the same block, so each block is balanced.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> make = lambda n, shift: torch.randn(n, 2, 4, generator=g) + shift
>>> train = {"en": make(20, 0.0), "fr": make(20, 2.0), "de": make(20, -2.0)}
>>> test = {"en": make(10, 0.0), "fr": make(10, 2.0), "de": make(10, -2.0)}
>>> table = language_probe(train, test, seed=0)
>>> list(table["layer"]), bool((table["accuracy"] > 0.8).all())
([0, 1], True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mlinguality.errors import MlingualityError

__all__ = [
    "DEFAULT_FRACTIONS",
    "PROBE_COLUMNS",
    "Probe",
    "fit_probe",
    "language_probe",
    "online_code_length",
]

DEFAULT_FRACTIONS = (
    0.1,
    0.2,
    0.4,
    0.8,
    1.0,
)  # Voita & Titov's doubling blocks, cut for ~1k examples
DEFAULT_C = 1.0  # scikit-learn's default inverse regularization strength
# L-BFGS stops when the gradient's largest entry is below this. 1e-10 took 10-25x longer on
# Gemma 3 270M's residuals (2.5 s against 0.1 s a fit) and moved the held-out log-likelihood by
# ~4e-4 relative (layers 2, 9, 16; 500 training rows): the stage fits ~150 probes.
DEFAULT_TOLERANCE = 1e-6
PROBE_COLUMNS = (
    "layer",
    "accuracy",
    "control_accuracy",
    "control_train_accuracy",
    "selectivity",
    "codelength_bits",
    "uniform_bits",
    "compression",
    "chance",
    "n_train",
    "n_test",
)


@dataclass(frozen=True)
class Probe:
    """A fitted probe: standardization, then logits ``W x + b``.

    Attributes:
        mean: Training mean of each feature.
        scale: Training standard deviation of each feature (1 where it is 0).
        weight: Coefficients on the standardized features (scikit-learn's ``coef_``).
        bias: Intercepts (``intercept_``).
    """

    mean: Float[Tensor, " d_model"]
    scale: Float[Tensor, " d_model"]
    weight: Float[Tensor, "cls d_model"]
    bias: Float[Tensor, " cls"]

    def log_probs(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n cls"]:
        """Log-probability of each class."""
        z = (x.double() - self.mean) / self.scale
        return torch.log_softmax(z @ self.weight.T + self.bias, dim=-1)

    def predict(self, x: Float[Tensor, "n d_model"]) -> Int[Tensor, " n"]:
        """The most probable class."""
        return self.log_probs(x).argmax(-1)


def fit_probe(
    x: Float[Tensor, "n d_model"],
    y: Int[Tensor, " n"],
    n_classes: int,
    *,
    C: float = DEFAULT_C,
    max_iter: int = 2000,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Probe:
    """Standardize on ``x`` and fit an L2 multinomial logistic regression (module docstring).

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> fit_probe(x, torch.tensor([0, 0, 1, 1]), 2).predict(x).tolist()
    [0, 0, 1, 1]
    """
    x = x.double()
    mean = x.mean(0)
    scale = x.std(0, correction=0)
    scale = torch.where(
        scale > 1e-12 * scale.max().clamp_min(1e-300), scale, torch.ones_like(scale)
    )
    z = (x - mean) / scale
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    penalty = 0.5 / (C * len(x))  # the mean loss's penalty: argmin as sum CE + ||W||^2 / 2C
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        max_iter=max_iter,
        tolerance_grad=tolerance,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight.T + bias, y.long())
        loss = loss + penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return Probe(mean, scale, weight.detach(), bias.detach())


def _stack(
    data: Mapping[str, Tensor], langs: Sequence[str], what: str
) -> tuple[Float[Tensor, "example lang layer d_model"], Int[Tensor, "example lang"]]:
    """Rows of every language, example-aligned, and their labels (the language's index)."""
    sizes = {lang: data[lang].shape for lang in langs}
    if len({shape for shape in sizes.values()}) != 1:
        raise MlingualityError(f"language_probe: {what} shapes differ across languages: {sizes}")
    stacked = torch.stack([data[lang] for lang in langs], 1)
    labels = einops.repeat(torch.arange(len(langs)), "lang -> example lang", example=len(stacked))
    return stacked, labels


def _within_example_shuffle(
    labels: Int[Tensor, "example lang"], generator: torch.Generator
) -> Int[Tensor, "example lang"]:
    """Each example's labels permuted among its translations (one permutation per example)."""
    keys = torch.rand(labels.shape, generator=generator)
    return labels.gather(1, keys.argsort(1))


def online_code_length(
    x: Float[Tensor, "example lang d_model"],
    y: Int[Tensor, "example lang"],
    n_classes: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    C: float = DEFAULT_C,
) -> float:
    """Online code length (bits) of the labels ``y`` of examples in the order given.

    The first ``fractions[0]`` of the examples cost ``log2 n_classes`` bits a label; each later
    block is coded by a probe fit on all examples before it (``-log2 p(label)``).

    >>> x = torch.tensor([[[0.0], [5.0]], [[0.1], [5.1]]])
    >>> online_code_length(x, torch.tensor([[0, 1], [0, 1]]), 2, (0.5, 1.0)) < 4.0
    True
    """
    n = x.shape[0]
    cuts = sorted({max(1, min(n, round(f * n))) for f in fractions} | {n})
    bits = cuts[0] * x.shape[1] * math.log2(n_classes)
    flat = "example lang d_model -> (example lang) d_model"
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        probe = fit_probe(einops.rearrange(x[:start], flat), y[:start].flatten(), n_classes, C=C)
        log_p = probe.log_probs(einops.rearrange(x[start:stop], flat))
        picked = log_p.gather(1, y[start:stop].reshape(-1, 1))  # (example lang) rows, one column
        bits -= float(picked.sum()) / math.log(2)
    return bits


def language_probe(
    train: Mapping[str, Float[Tensor, "train_example layer d_model"]],
    test: Mapping[str, Float[Tensor, "test_example layer d_model"]],
    *,
    seed: int,
    control: bool = True,
    C: float = DEFAULT_C,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Per layer: held-out language-ID accuracy, the control task, and the online code length.

    Args:
        train: ``{lang: example_resid_mean}`` of the training examples, the same examples
            (parallel translations) in every language and in the same order.
        test: The same for held-out examples (other examples than ``train``'s).
        seed: Seeds the control labels and the online code's example order.
        control: Fit the control task (two more fits per layer).
        C: Inverse L2 strength, as scikit-learn's.
        fractions: Cuts of the online code, as fractions of the training examples.
        layers: Layers to probe (default all).

    Returns:
        One row per layer with :data:`PROBE_COLUMNS` (accuracies in [0, 1], code lengths in
        bits; control columns ``nan`` without ``control``; ``n_train``/``n_test`` rows).
    """
    langs = list(train)
    if sorted(langs) != sorted(test):
        raise MlingualityError(f"language_probe: train has {sorted(langs)}, test {sorted(test)}")
    if len(langs) < 2:
        raise MlingualityError("language_probe needs at least two languages")
    x_train, y_train = _stack(train, langs, "train")
    x_test, y_test = _stack(test, langs, "test")
    k = len(langs)
    generator = torch.Generator().manual_seed(seed)
    control_train = _within_example_shuffle(y_train, generator)
    control_test = _within_example_shuffle(y_test, generator)
    order = torch.randperm(x_train.shape[0], generator=generator)
    flat = "example lang d_model -> (example lang) d_model"
    rows = []
    for layer in range(x_train.shape[2]) if layers is None else layers:
        fit_x = einops.rearrange(x_train[:, :, layer], flat)
        eval_x = einops.rearrange(x_test[:, :, layer], flat)
        probe = fit_probe(fit_x, y_train.flatten(), k, C=C)
        accuracy = float((probe.predict(eval_x) == y_test.flatten()).double().mean())
        control_acc = control_fit_acc = math.nan
        if control:
            shuffled = fit_probe(fit_x, control_train.flatten(), k, C=C)
            control_acc = float(
                (shuffled.predict(eval_x) == control_test.flatten()).double().mean()
            )
            control_fit_acc = float(
                (shuffled.predict(fit_x) == control_train.flatten()).double().mean()
            )
        bits = online_code_length(x_train[order, :, layer], y_train[order], k, fractions, C=C)
        uniform = y_train.numel() * math.log2(k)
        rows.append(
            {
                "layer": layer,
                "accuracy": accuracy,
                "control_accuracy": control_acc,
                "control_train_accuracy": control_fit_acc,
                "selectivity": accuracy - control_acc,
                "codelength_bits": bits,
                "uniform_bits": uniform,
                "compression": uniform / bits,
                "chance": 1 / k,
                "n_train": y_train.numel(),
                "n_test": y_test.numel(),
            }
        )
    return pd.DataFrame(rows, columns=list(PROBE_COLUMNS))
