"""The W&B mirror of a run: config, per-layer metrics, tables, plots and summary.

Only runners use this module, and wandb is imported only when a run is actually tracked. Local
files are the results; W&B is a copy of them. Any W&B failure (no network, a bad key, a crash in
wandb itself) logs one warning, turns the tracker off, and lets the run finish.

Mode ``"auto"`` is ``WANDB_MODE`` when that is set, else online when an API key is configured
(``WANDB_API_KEY`` or a netrc entry for the W&B host), else offline: offline runs are written
under the run folder and uploaded later with ``wandb sync RUN_DIR/wandb/offline-run-*``.

Keys are namespaced: ``selectivity/...``, ``ablation/...``, ``perf/...``.
"""

from __future__ import annotations

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
        run_config: The whole resolved config (logged as the W&B config).
        run_dir: The local run folder; W&B writes under ``run_dir/wandb``.
        name: The W&B run name.
    """

    def __init__(
        self, config: TrackingConfig, run_config: dict[str, Any], run_dir: Path, name: str
    ) -> None:
        self.config = config
        self.mode: Mode = resolve_mode(config.wandb)
        self.run_config = run_config
        self.run_dir = Path(run_dir)
        self.name = name
        self.run: Any = None
        self.failed = False

    @property
    def active(self) -> bool:
        return self.run is not None and not self.failed

    def start(self) -> None:
        """Open the W&B run (offline files go to ``run_dir/wandb``)."""
        if self.mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(
                project=self.config.project,
                entity=self.config.entity,
                group=self.config.group,
                tags=list(self.config.tags) or None,
                name=self.name,
                config=self.run_config,
                dir=str(self.run_dir),
                mode=self.mode,
                reinit="finish_previous",
            )
            self.run.define_metric("layer")
            self.run.define_metric("selectivity/*", step_metric="layer")
        except Exception as error:  # noqa: BLE001 - W&B must never stop the run
            self._warn("init", error)
            self.run = None

    def log_layers(self, rows: Sequence[dict[str, Any]]) -> None:
        """Log per-layer values as history with ``layer`` as the x axis (keys already namespaced)."""
        for row in rows:
            self._call("log", lambda row=row: self.run.log(dict(row)))

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Log a table (e.g. ``ablation/matrix``)."""

        def log() -> None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

        self._call("log_table", log)

    def log_images(self, images: dict[str, Path]) -> None:
        """Log PNG files by key (e.g. ``selectivity/profile``)."""

        def log() -> None:
            import wandb

            self.run.log({key: wandb.Image(str(path)) for key, path in images.items()})

        if images:
            self._call("log_images", log)

    def set_summary(self, summary: dict[str, Any]) -> None:
        """Write the headline numbers into the run summary."""

        def update() -> None:
            for key, value in summary.items():
                self.run.summary[key] = value

        self._call("summary", update)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (offline runs: the files are complete after this)."""
        if self.run is None:
            return
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

    # --- failure handling -------------------------------------------------------------------

    def _call(self, what: str, action) -> None:
        if not self.active:
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001
            self._warn(what, error)

    def _warn(self, what: str, error: Exception) -> None:
        self.failed = True
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        logger.warning(
            "W&B %s failed (%s); W&B tracking is off for this run, local results are unaffected",
            what,
            message,
        )
