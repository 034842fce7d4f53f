"""Tracker: mode resolution, offline run files read back with wandb's protobufs, failure safety."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlinguality.run.config import RunConfig, TrackingConfig
from mlinguality.run.tracking import Tracker, has_api_key, resolve_mode
from tests.wandb_reader import read_offline_run


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    """No API key anywhere: empty env, an empty netrc, no WANDB_MODE."""
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)


def test_auto_mode_is_offline_without_a_key(no_key):
    assert not has_api_key()
    assert resolve_mode("auto") == "offline"


def test_auto_mode_is_online_with_a_key(no_key, monkeypatch, tmp_path):
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password abc123\n")
    assert has_api_key()
    assert resolve_mode("auto") == "online"
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"


def test_auto_mode_follows_wandb_mode_and_explicit_wins(no_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("online") == "online"
    assert resolve_mode("disabled") == "disabled"


def _track(tmp_path, config: TrackingConfig) -> Tracker:
    tracker = Tracker(config, RunConfig().to_dict(), tmp_path, name="unit")
    tracker.start()
    tracker.log_layers(
        [{"layer": layer, "per_layer/selectivity/lape/en": 0.5 + layer} for layer in range(3)]
    )
    tracker.log_table(
        "ablation/matrix", ["ablated", "en", "ru"], [["en", 0.3, 0.01], ["ru", 0.02, 0.4]]
    )
    tracker.set_summary(
        {"selectivity/u_shape": 1.25, "ablation/diagonal_dominance": 0.33, "perf/seconds": 2.0}
    )
    return tracker


def test_offline_run_files_hold_config_history_and_summary(tmp_path):
    tracker = _track(tmp_path, TrackingConfig(wandb="offline", group="g1", tags=["unit"]))
    assert tracker.active
    tracker.finish()
    folder = tracker.offline_dir
    assert folder is not None and folder.parent == tmp_path / "wandb"
    run = read_offline_run(folder)
    assert run.group == "g1" and run.tags == ["unit"] and run.name == "unit"
    assert run.exit_code == 0
    # the config is the whole nested run config, with the mode actually used (not "auto")
    config = {k: v for k, v in run.config.items() if not k.startswith("_")}
    expected = RunConfig().to_dict()
    assert config["tracking"] == {**expected["tracking"], "wandb": "offline"}
    assert {k: v for k, v in config.items() if k != "tracking"} == {
        k: v for k, v in expected.items() if k != "tracking"
    }
    # per-layer history, one row per layer, with the layer as its x axis and no summary value
    key = "per_layer/selectivity/lape/en"
    layers = [(row["layer"], row[key]) for row in run.history if "layer" in row]
    assert layers == [(0, 0.5), (1, 1.5), (2, 2.5)]
    assert run.metrics["per_layer/*"] == {"step_metric": "layer", "summary_none": True}
    assert key not in run.summary and "layer" not in run.summary
    # the matrix table was logged (as a table file) and the summary holds the headline numbers
    assert run.summary["ablation/matrix/_type"] == "table-file"
    assert run.summary["ablation/matrix/nrows"] == 2
    assert run.summary["selectivity/u_shape"] == 1.25
    assert run.summary["ablation/diagonal_dominance"] == 0.33
    assert run.summary["perf/seconds"] == 2.0


def test_disabled_writes_nothing(tmp_path):
    tracker = _track(tmp_path, TrackingConfig(wandb="disabled"))
    assert not tracker.active
    tracker.finish()
    assert not (tmp_path / "wandb").exists()


def test_failing_init_warns_and_turns_tracking_off(tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("network is down\nsecond line")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING, logger="mlinguality.run.tracking"):
        tracker = _track(tmp_path, TrackingConfig(wandb="online"))
        tracker.finish()
    assert not tracker.active
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "W&B init failed (network is down)" in warnings[0]


def test_failure_mid_run_stops_tracking_once(tmp_path, caplog):
    tracker = Tracker(TrackingConfig(wandb="offline"), {}, tmp_path, name="x")
    tracker.start()

    def broken_log(*args, **kwargs):
        raise OSError("disk full")

    tracker.run.log = broken_log
    with caplog.at_level(logging.WARNING, logger="mlinguality.run.tracking"):
        tracker.log_layers([{"layer": 0, "per_layer/a": 1.0}, {"layer": 1, "per_layer/a": 2.0}])
        tracker.set_summary({"perf/seconds": 1.0})
    assert not tracker.active
    assert sum("disk full" in r.getMessage() for r in caplog.records) == 1
    tracker.finish()  # still closes the underlying run without raising
    assert tracker.run is None


def test_a_users_open_run_is_joined_and_left_open(tmp_path):
    import wandb

    user = wandb.init(project="mine", mode="offline", dir=str(tmp_path), name="notebook")
    try:
        tracker = _track(tmp_path / "run", TrackingConfig(wandb="offline"))
        assert tracker.run is user and tracker.active
        tracker.finish()
        assert wandb.run is user  # still open: the user's next log works
        user.log({"mine/x": 1.0})
    finally:
        user.finish()
    run = read_offline_run(next((tmp_path / "wandb").glob("offline-run-*")))
    assert run.name == "notebook" and run.summary["mine/x"] == 1.0
    assert run.summary["selectivity/u_shape"] == 1.25  # our results went into the user's run
    assert run.config["tracking"]["wandb"] == "offline"


def test_wandb_gets_an_absolute_run_folder(tmp_path, monkeypatch):
    """A relative run folder reaches wandb.init as an absolute path (wandb's service process
    has its own working directory, and put relative run files beside the repository)."""
    import wandb

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(TrackingConfig(wandb="offline"), {}, Path("runs/x-1"), name="x")
    tracker.start()
    assert seen["dir"] == str(tmp_path.resolve() / "runs" / "x-1")


def test_artifacts_of_a_relative_run_folder_are_logged(tmp_path, monkeypatch, caplog):
    """The runner passes paths under a relative run folder (``runs/NAME/stats``); the tracker
    resolves its run folder, and must resolve these too (a run logged no artifact once)."""
    monkeypatch.chdir(tmp_path)
    run_dir = Path("runs/rel-1")
    (run_dir / "stats").mkdir(parents=True)
    (run_dir / "stats" / "en.safetensors").write_bytes(b"x")
    (run_dir / "report.md").write_text("# report\n")
    tracker = Tracker(TrackingConfig(wandb="offline"), {}, run_dir, name="rel")
    tracker.start()
    with caplog.at_level(logging.WARNING):
        tracker.log_artifact("stats-x", "stats", [run_dir / "stats", run_dir / "report.md"])
    tracker.finish()
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("mlinguality")]
    assert not [message for message in ours if "artifact" in message], ours
    run = read_offline_run(next((tmp_path / "runs" / "rel-1" / "wandb").glob("offline-run-*")))
    assert run.exit_code == 0


def test_a_sweep_run_name_gives_a_safe_artifact_name_and_a_failed_artifact_keeps_logging(
    tmp_path, monkeypatch, caplog
):
    """Local sweeps name runs like ``sweep-000-top_rate=0.01, mode=mean``: W&B refuses such
    artifact names, and one refused artifact used to turn tracking off for the whole run."""
    import wandb

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.md").write_text("# report\n")
    tracker = Tracker(TrackingConfig(wandb="offline"), {}, run_dir, name="s-000-top_rate=0.01, m")
    tracker.start()
    tracker.log_artifact("report-s-000-top_rate=0.01, m", "report", [run_dir / "report.md"])
    assert tracker.active
    real = wandb.Artifact

    def refused(*args, **kwargs):
        raise ValueError("Artifact name may only contain alphanumeric characters")

    monkeypatch.setattr(wandb, "Artifact", refused)
    with caplog.at_level(logging.WARNING):
        tracker.log_artifact("config-x", "config", [run_dir / "report.md"])
    monkeypatch.setattr(wandb, "Artifact", real)
    assert tracker.active  # the run's logging goes on
    assert any("the run's logging goes on" in r.getMessage() for r in caplog.records)
    tracker.set_summary({"selectivity/u_shape": 1.5})
    tracker.finish()
    run = read_offline_run(next((run_dir / "wandb").glob("offline-run-*")))
    assert run.summary["selectivity/u_shape"] == 1.5
    names = [artifact["name"] for artifact in run.artifacts]
    assert any(name.startswith("report-s-000-top_rate_0.01__m") for name in names), names
