"""The headline numbers of a run folder (``summary.json``) and what the W&B mirror logs.

Everything here reads the files the earlier stages wrote (never their in-memory objects), so a
summary can be rebuilt from any finished run folder. The verdicts on the paper's claims are
drawn from these numbers by :mod:`mlinguality.run.verdicts`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from mlinguality.run.config import RunConfig
from mlinguality.run.lens_report import lens_summary
from mlinguality.run.verdicts import FDR_Q, num, verdicts


def read_output(run_dir: Path, name: str) -> Any:
    """A run folder's JSON or CSV output (a DataFrame), or None when the stage did not run."""
    path = run_dir / name
    if not path.exists():
        return None
    return json.loads(path.read_text()) if name.endswith(".json") else pd.read_csv(path)


def build_summary(
    config: RunConfig, run_dir: Path, stages: dict, origins: dict, total_s: float
) -> dict[str, Any]:
    """The headline numbers, nested by namespace (``selectivity``, ``ablation``, ``perf``)."""
    corpus = read_output(run_dir, "corpus.json") or {}
    u_shape = read_output(run_dir, "u_shape.csv")
    chosen = read_output(run_dir, "selectivity.csv")
    ablation = read_output(run_dir, "ablation.json")
    summary: dict[str, Any] = {
        "run": {
            "name": run_dir.name,
            "model": config.model.spec,
            "langs": list(config.corpus.langs),
            "n_select": corpus.get("n_select"),
            "n_eval": (ablation or {}).get("n_eval_examples", corpus.get("n_eval")),
        }
    }
    sel: dict[str, Any] = {}
    profile = read_output(run_dir, "layer_profile.csv")
    if u_shape is not None and len(u_shape):
        headline = config.selectivity.metrics[0]
        if "control" in u_shape:
            u_shape = u_shape[~u_shape["control"].astype(bool)]
        rows = u_shape[u_shape["metric"] == headline]
        if not len(rows):
            rows = u_shape
            headline = str(rows["metric"].iloc[0])
        sel["headline_metric"] = headline
        sel["u_shape"] = num(rows["u"].mean())
        if "u_excess" in rows:  # U of the excess over the permutation null (chance per layer)
            sel["u_shape_excess"] = num(rows["u_excess"].mean())
        sel["u_shape_max_p"] = num(rows["p_value"].max())
        if "u_over_floor" in rows and rows["u_over_floor"].notna().any():
            sel["u_over_floor"] = num(rows["u_over_floor"].mean())
        sel["u_shape_by_pair"] = {
            f"{row.metric}/{row.pair}": {
                "u": num(row.u),
                "u_excess": num(getattr(row, "u_excess", None)),
                "p_value": num(row.p_value),
            }
            for row in u_shape.itertuples()
        }
    if profile is not None and len(profile):
        sel["n_layers"] = int(profile["layer"].max()) + 1
    if profile is not None and "control" in profile and profile["control"].any():
        verse = profile[(profile["metric"] == "verse_distance") & ~profile["control"]]
        if len(verse) and "q_value" in verse:
            sel["layers_above_floor"] = {
                str(pair): int((group["q_value"] < FDR_Q).sum())
                for pair, group in verse.groupby("pair", sort=False)
            }
    if u_shape is not None and "u_over_floor" in u_shape:
        verse_u = u_shape[(u_shape["metric"] == "verse_distance") & u_shape["u_over_floor"].notna()]
        if len(verse_u):  # the U of the per-verse distance minus the same-language floor
            sel["verse_distance_u_over_floor"] = {
                str(row.pair): [
                    num(row.u_over_floor),
                    num(row.u_over_floor_ci_low),
                    num(row.u_over_floor_ci_high),
                ]
                for row in verse_u.itertuples()
            }
    if chosen is not None:
        per_lang = chosen.groupby("lang", sort=False)["n_selected"].sum()
        sel["n_selected"] = {str(lang): int(n) for lang, n in per_lang.items()}
        sel["n_selected_total"] = int(per_lang.sum())
    summary["selectivity"] = sel
    if ablation is not None:
        dominance = ablation["dominance"]
        summary["ablation"] = {
            "mode": ablation["mode"],
            "diagonal_dominance": dominance["ratio"],
            **{k: v for k, v in dominance.items() if k != "ratio"},
            "baseline_bits_per_byte": ablation["baseline_bits_per_byte"],
        }
    lenses = lens_summary(run_dir, config.lenses.english)
    if lenses is not None:
        summary["lenses"] = lenses
    perf: dict[str, Any] = {f"{name}_s": entry["seconds"] for name, entry in stages.items()}
    perf["total_s"] = round(total_s, 3)
    perf["reused"] = sorted(name for name, origin in origins.items() if origin != "computed")
    if origins.get("collect") == "computed" and corpus.get("n_tokens"):
        tokens = sum(corpus["n_tokens"].values())
        perf["collect_tokens"] = tokens
        perf["collect_tokens_per_s"] = round(tokens / max(stages["collect"]["seconds"], 1e-9), 1)
    summary["perf"] = perf
    summary["verdicts"] = {key: asdict(verdict) for key, verdict in verdicts(summary).items()}
    return summary


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a/b/c": value}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def wandb_payload(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """What the tracker logs: per-layer rows (``per_layer/...``), tables, images, the flat summary."""
    profile = read_output(run_dir, "layer_profile.csv")
    chosen = read_output(run_dir, "selectivity.csv")
    ablation = read_output(run_dir, "ablation.json")
    layers: dict[int, dict[str, Any]] = {}
    if profile is not None:
        for row in profile.itertuples():
            layers.setdefault(int(row.layer), {"layer": int(row.layer)})[
                f"per_layer/selectivity/{row.metric}/{row.pair}"
            ] = num(row.value)
    if chosen is not None:
        for row in chosen.itertuples():
            layers.setdefault(int(row.layer), {"layer": int(row.layer)})[
                f"per_layer/n_selected/{row.lang}"
            ] = int(row.n_selected)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
    if profile is not None:
        clean = profile.astype(object).where(profile.notna(), None)
        tables["selectivity/layer_profile"] = (list(profile.columns), clean.values.tolist())
    if ablation is not None:
        tables["ablation/matrix"] = (
            ["ablated", *ablation["langs"]],
            [
                [row, *cells]
                for row, cells in zip(
                    ablation["rows"], ablation["delta_bits_per_byte"], strict=True
                )
            ],
        )
    images = {
        key: run_dir / name
        for key, name in (
            ("selectivity/profile", "plots/layer_profile.png"),
            ("selectivity/selected_neurons", "plots/selected_neurons.png"),
            ("ablation/heatmap", "ablation.png"),
        )
        if (run_dir / name).exists()
    }
    flat = {
        key: value
        for key, value in flatten(summary).items()
        if key.split("/")[0] in ("selectivity", "ablation", "perf")
    }
    flat |= {f"verdicts/{key}": v["verdict"] for key, v in summary.get("verdicts", {}).items()}
    return {
        "layers": [layers[k] for k in sorted(layers)],
        "tables": tables,
        "images": images,
        "summary": flat,
    }
