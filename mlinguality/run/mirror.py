"""The W&B mirror of a finished run: per-layer series, tables, images, the summary, the
artifacts of the declared stages, and the steering folder."""

from __future__ import annotations

import json
from pathlib import Path

from mlinguality.run import stages
from mlinguality.run.steps.examples import OUTPUT as NEURONS_FOLDER
from mlinguality.run.steps.steer import OUTPUT as STEERING_FOLDER


def mirror_run(tracker, run_dir: Path, summary: dict, keys: dict[str, str]) -> None:
    """Per-layer series, tables, images, the summary and the artifacts of a finished run."""
    if not tracker.active:
        return
    from mlinguality.run.summary import wandb_payload

    payload = wandb_payload(run_dir, summary)
    tracker.log_layers(payload["layers"])
    for key, (columns, rows) in payload["tables"].items():
        tracker.log_table(key, columns, rows)
    tracker.log_images(payload["images"])
    tracker.set_summary(payload["summary"])
    log_steering(tracker, run_dir / STEERING_FOLDER)
    log_neurons(tracker, run_dir)
    meta = {"run": run_dir.name, "model": summary["run"]["model"], "langs": summary["run"]["langs"]}
    for stage in stages.STAGES:  # each declared artifact: the stage's outputs, named by its key
        if stage.artifact is None or stage.name not in keys:
            continue
        prefix, kind = stage.artifact
        tracker.log_artifact(
            f"{prefix}-{keys[stage.name]}",
            kind,
            [run_dir / name for name in stage.outputs],
            {**meta, "stage_key": keys[stage.name]},
        )
    report = [
        "report.md",
        "summary.json",
        "plots",
        "layer_profile.csv",
        "u_shape.csv",
        "selectivity.csv",
        "ablation.csv",
        "ablation.json",
        "ablation.png",
    ]
    tracker.log_artifact(
        f"report-{run_dir.name}", "report", [run_dir / name for name in report], meta
    )
    tracker.log_artifact(f"config-{run_dir.name}", "config", [run_dir / "config.yaml"], meta)


def log_steering(tracker, out: Path, n_samples: int = 40) -> None:
    """Mirror a steering folder to W&B: the summary table, samples of generations, the plots,
    the headline under ``steering/...``."""
    import csv

    if not (out / "steering_summary.csv").exists():
        return
    for key, name in (
        ("steering/summary", "steering_summary.csv"),
        ("steering/identifier", "identifier.csv"),
    ):
        with (out / name).open(encoding="utf-8") as handle:
            table = list(csv.reader(handle))
        tracker.log_table(key, table[0], table[1:])
    with (out / "steering.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = ["source", "target", "condition", "alpha", "prompt", "text", "lang", "outcome"]
    step = max(len(rows) // n_samples, 1)
    samples = [[row[c] for c in columns] for row in rows[::step]]
    tracker.log_table("steering/samples", columns, samples)
    tracker.log_images(
        {
            f"steering/plot_{name}": out / f"steering_{name}.png"  # steering/alpha: the number
            for name in ("alpha", "heatmap", "methods")
            if (out / f"steering_{name}.png").exists()
        }
    )
    record = json.loads((out / "steering.json").read_text(encoding="utf-8"))
    tracker.set_summary({f"steering/{k}": v for k, v in record["headline"].items()})


def log_neurons(tracker, run_dir: Path, n_contexts: int = 3) -> None:
    """Mirror the neuron cards: ``neurons/table`` (the selected neurons, a rendered card per
    row with ``n_contexts`` contexts per language), ``neurons/output_language``, the own-language
    shares in the summary, and ``neurons.html`` as an artifact."""
    import csv

    from mlinguality.dashboards.cards import card_html

    path = run_dir / NEURONS_FOLDER / "neurons.json"
    if not path.is_file():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    columns = ["set", "lang", "layer", "neuron", "score", "own_share", "top_promoted", "card"]
    rows = [
        [
            entry["set"],
            entry["lang"],
            entry["layer"],
            entry["neuron"],
            entry["score"],
            entry["own_share"],
            " ".join(repr(token) for token, _, _ in entry["promoted"][:5]),
            card_html(entry, record["langs"], top=n_contexts),
        ]
        for entry in record["neurons"]
        if entry["set"] != "random"
    ]
    tracker.log_table("neurons/table", columns, rows, html=("card",))
    with (run_dir / NEURONS_FOLDER / "output_language.csv").open(encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    tracker.log_table("neurons/output_language", table[0], table[1:])
    tracker.set_summary(
        {
            f"neurons/own_share/{row[1]}/{row[0]}": float(row[3])
            for row in table[1:]
            if row[3] not in ("", "nan")
        }
    )
    tracker.log_artifact(
        f"browser-{run_dir.name}",
        "neuron-browser",
        [run_dir / "neurons.html"],
        {"run": run_dir.name},
    )
