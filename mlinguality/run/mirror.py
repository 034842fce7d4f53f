"""The W&B mirror of a finished run: per-layer series, tables, images, the summary, the
artifacts of the declared stages, and the steering folder."""

from __future__ import annotations

import json
from pathlib import Path

from mlinguality.run import stages
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
            f"steering/{name}": out / f"steering_{name}.png"
            for name in ("alpha", "heatmap")
            if (out / f"steering_{name}.png").exists()
        }
    )
    record = json.loads((out / "steering.json").read_text(encoding="utf-8"))
    tracker.set_summary({f"steering/{k}": v for k, v in record["headline"].items()})
