"""The W&B side of a run: opened at the start, live stage progress, results, artifacts.

Only runners use this module, and wandb is imported only when a run is actually tracked. Local
files are the results; W&B is a copy of them. Any W&B failure (no network, a bad key, a crash in
wandb itself) logs one warning, turns the tracker off, and lets the run finish.

Mode ``"auto"`` is ``WANDB_MODE`` when that is set, else online when an API key is configured
(``WANDB_API_KEY`` or a netrc entry for the W&B host), else offline: offline runs are written
under the run folder and uploaded later with ``wandb sync RUN_DIR/wandb/offline-run-*``. The
mode actually used is what the W&B config records as ``tracking.wandb``.

What a run logs, and what each key means (one meaning per key, history and summary alike):

- at the start: the whole resolved config; wandb adds system metrics and the console log;
- after each stage: ``progress/stage`` (1, 2, ... stages done), ``progress/fraction`` and
  ``perf/{stage}_s`` (seconds; ``perf/...`` in the summary are the same numbers);
- per-layer series under ``per_layer/...`` with ``layer`` as their x axis (``define_metric``)
  and no summary value (a per-layer series has no single value);
- the headline numbers as summary keys (``selectivity/u_shape``, ``selectivity/n_selected/de``
  = the total over layers, ``ablation/diagonal_dominance``, ...);
- tables (``selectivity/layer_profile``, ``ablation/matrix``) and images, logged once, never
  stamped with a layer;
- artifacts a later run can ``use_artifact``: ``stats-{collect key}`` (type ``stats``),
  ``neurons-{select key}`` (``selected-neurons``), ``report-{run}`` (``report``: report.md,
  CSVs, plots, summary) and ``config-{run}`` (``config``).

Inside a W&B run you opened yourself (``wandb.init`` in a notebook), the tracker logs into that
run and leaves it open: it never finishes a run it did not start.

At finish, ``run_dir/wandb/logged.json`` records what this run logged (id, mode, config, history
rows, summary, table and image keys, artifact names): an offline run is readable without W&B.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from mlinguality.run.config import TrackingConfig

logger = logging.getLogger(__name__)

Mode = Literal["online", "offline", "disabled"]
_DEFAULT_HOST = "https://api.wandb.ai"


def has_api_key() -> bool:
    """Whether a W&B API key is configured (environment or netrc), without importing wandb."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", _DEFAULT_HOST)).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str) -> Mode:
    """The W&B mode a run uses: ``auto`` -> WANDB_MODE, else online with a key, else offline.

    >>> resolve_mode("disabled")
    'disabled'
    """
    if requested in ("online", "offline", "disabled"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ValueError(f"tracking.wandb: unknown mode {requested!r}")
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("offline", "dryrun"):
        return "offline"
    if env == "disabled":
        return "disabled"
    return "online" if has_api_key() else "offline"


class Tracker:
    """A W&B run that never breaks the experiment.

    Every method is a no-op when tracking is disabled or after any W&B error (which is logged
    once as a warning).

    Args:
        config: The tracking section of the run config.
        run_config: The whole resolved config (logged as the W&B config, with the mode used).
        run_dir: The local run folder; W&B writes under ``run_dir/wandb``.
        name: The W&B run name.
    """

    def __init__(
        self, config: TrackingConfig, run_config: dict[str, Any], run_dir: Path, name: str
    ) -> None:
        self.config = config
        self.mode: Mode = resolve_mode(config.wandb)
        self.run_config = _with_mode(run_config, self.mode)
        # absolute: wandb's service process resolves a relative dir against its own working
        # directory (the first wandb.init's), which put run files beside the repository
        self.run_dir = Path(run_dir).resolve()
        self.name = name
        self.run: Any = None
        self.owned = True  # False inside a run the user opened: never finish that one
        self.failed = False
        # what was logged, written to run_dir/wandb/logged.json at finish (readable offline)
        self.logged: dict[str, Any] = {"history": [], "summary": {}, "tables": [], "images": []}
        self.logged["artifacts"] = []

    @property
    def active(self) -> bool:
        return self.run is not None and not self.failed

    def start(self) -> None:
        """Open the W&B run (offline files go to ``run_dir/wandb``), or join the user's run."""
        if self.mode == "disabled":
            return
        try:
            import wandb

            if wandb.run is not None:  # a run the user opened: log into it, leave it open
                self.run, self.owned = wandb.run, False
                self.run.config.update(self.run_config, allow_val_change=True)
                logger.info("W&B: logging into your open run %s (left open)", self.run.name)
            else:
                self.run = wandb.init(
                    project=self.config.project,
                    entity=self.config.entity,
                    group=self.config.group,
                    tags=list(self.config.tags) or None,
                    name=self.name,
                    config=self.run_config,
                    dir=str(self.run_dir),
                    mode=self.mode,
                )
            self.run.define_metric("layer", summary="none")
            self.run.define_metric("per_layer/*", step_metric="layer", summary="none")
        except Exception as error:  # noqa: BLE001 - W&B must never stop the run
            self._warn("init", error)
            self.run = None

    def log_stage(self, stage: str, done: int, total: int, seconds: float) -> None:
        """Live progress: ``stage`` finished as number ``done`` of ``total`` in ``seconds``."""
        row = {
            "progress/stage": done,
            "progress/fraction": done / max(total, 1),
            f"perf/{stage}_s": seconds,
        }
        self._call("log_stage", lambda: self._log(row))

    def log_layers(self, rows: Sequence[dict[str, Any]]) -> None:
        """Per-layer rows ``{"layer": L, "per_layer/...": value}`` (``layer`` is their x axis)."""
        for row in rows:
            self._call("log", lambda row=row: self._log(dict(row)))

    def log_table(
        self, key: str, columns: list[str], rows: list[list[Any]], html: Sequence[str] = ()
    ) -> None:
        """Log a table (e.g. ``ablation/matrix``); the columns named in ``html`` hold HTML
        (shown rendered in the W&B table)."""

        def log() -> None:
            import wandb

            wrap = [columns.index(name) for name in html]
            data = [
                [wandb.Html(cell) if i in wrap else cell for i, cell in enumerate(row)]
                for row in rows
            ]
            self.run.log({key: wandb.Table(columns=columns, data=data)})
            self.logged["tables"].append({"key": key, "columns": columns, "n_rows": len(rows)})

        self._call("log_table", log)

    def log_images(self, images: dict[str, Path]) -> None:
        """Log PNG files by key (e.g. ``selectivity/profile``)."""

        def log() -> None:
            import wandb

            self.run.log({key: wandb.Image(str(path)) for key, path in images.items()})
            self.logged["images"] += [
                {"key": key, "file": Path(p).name} for key, p in images.items()
            ]

        if images:
            self._call("log_images", log)

    def log_artifact(
        self,
        name: str,
        kind: str,
        paths: Sequence[Path],
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Log files and folders (paths under ``run_dir``) as one artifact, aliased by run name.

        The name is made W&B-safe (a sweep's run names hold ``=``, spaces and commas); an artifact
        that fails warns and leaves the run's other logging on.
        """
        present = [Path(path).resolve() for path in paths if Path(path).exists()]
        name = _alias(name)

        def log() -> None:
            import wandb

            artifact = wandb.Artifact(name, type=kind, metadata=metadata or {})
            for path in present:
                relative = path.relative_to(self.run_dir).as_posix()
                if path.is_dir():
                    artifact.add_dir(str(path), name=relative)
                else:
                    artifact.add_file(str(path), name=relative)
            self.run.log_artifact(artifact, aliases=["latest", _alias(self.name)])
            self.logged["artifacts"].append({"name": name, "type": kind})

        if present:
            self._call(f"artifact {name}", log, fatal=False)

    def set_summary(self, summary: dict[str, Any]) -> None:
        """Write the headline numbers into the run summary."""

        def update() -> None:
            for key, value in summary.items():
                self.run.summary[key] = value
                self.logged["summary"][key] = value

        self._call("summary", update)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (offline runs: the files are complete after this); a user's run stays open."""
        if self.run is None:
            return
        self._write_logged()
        if self.owned:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as error:  # noqa: BLE001
                self._warn("finish", error)
        self.run = None

    @property
    def offline_dir(self) -> Path | None:
        """The offline run folder to pass to ``wandb sync`` (None unless offline)."""
        if self.mode != "offline":
            return None
        found = sorted((self.run_dir / "wandb").glob("offline-run-*"))
        return found[-1] if found else None

    def _log(self, row: dict[str, Any]) -> None:
        self.run.log(row)
        self.logged["history"].append(row)

    def _write_logged(self) -> None:
        """``run_dir/wandb/logged.json``: the run's id, mode, config and what this run logged
        (history rows, summary, table/image keys, artifact names), readable without W&B (an
        offline run keeps them only inside its ``.wandb`` log; docs/wandb.md)."""
        record = {
            "id": self.run.id,
            "name": self.run.name,
            "project": self.config.project,
            "mode": self.mode,
            "offline_dir": str(self.offline_dir) if self.offline_dir else None,
            "config": self.run_config,
            **self.logged,
        }
        try:
            folder = self.run_dir / "wandb"
            folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps(record, indent=1, default=_plain, allow_nan=True)
            (folder / "logged.json").write_text(text + "\n", encoding="utf-8")
        except (OSError, TypeError, ValueError) as error:
            self._warn("logged.json", error, fatal=False)

    # --- failure handling -------------------------------------------------------------------

    def _call(self, what: str, action, fatal: bool = True) -> None:
        """Run one W&B call; a failure warns, and (``fatal``) turns tracking off for the run."""
        if not self.active:
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001
            self._warn(what, error, fatal)

    def _warn(self, what: str, error: Exception, fatal: bool = True) -> None:
        self.failed = self.failed or fatal
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        consequence = "W&B tracking is off for this run" if fatal else "the run's logging goes on"
        logger.warning(
            "W&B %s failed (%s); %s, local results are unaffected", what, message, consequence
        )


def _plain(value: Any) -> Any:
    """A JSON value of a numpy/torch number or a path (``str`` otherwise)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _with_mode(run_config: dict[str, Any], mode: str) -> dict[str, Any]:
    """The config as W&B records it: ``tracking.wandb`` is the mode used, not ``auto``."""
    tracking = run_config.get("tracking")
    if not isinstance(tracking, dict):
        return run_config
    return {**run_config, "tracking": {**tracking, "wandb": mode}}


def _alias(name: str) -> str:
    """An artifact alias from a run name (W&B aliases: letters, digits, ``-_.``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:128]
