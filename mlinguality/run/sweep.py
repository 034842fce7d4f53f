"""Run a W&B sweep file locally, with no W&B server: grid and random search.

A sweep file is W&B's own format, so ``wandb sweep FILE && wandb agent ID`` runs it unchanged.
The command is the installed ``mlinguality`` console script, so it works from a pip install::

    method: grid                 # grid | random (bayes needs the W&B server)
    metric: {name: ablation/diagonal_dominance, goal: maximize}
    parameters:
      selectivity.top_rate: {values: [0.005, 0.01, 0.02]}
      ablation.mode: {values: [zero, mean]}
    command: [mlinguality, run, ${args}]     # the built-in defaults = the main job

``mlinguality sweep FILE`` first checks the file against W&B's own sweep schema
(:func:`schema_violations`), expands the parameters, builds each run's command exactly as
``wandb agent`` does (wandb's own ``create_sweep_command_args``: ``--selectivity.top_rate=0.02``),
adds ``--tracking.group``, ``--tracking.wandb``, ``--output_dir`` and ``--name`` (made from the
swept values, e.g. ``rate_mode-003-top_rate=0.02-mode=mean``) so that every run lands in one W&B
group and one sweep folder, runs them one after another, and writes ``sweep.csv`` (one row per
run: parameters, status, headline numbers) after each run.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlinguality.errors import MlingualityError
from mlinguality.run.yamlfile import load_yaml

logger = logging.getLogger(__name__)

# W&B's own sweep-config JSON schema (from W&B's `sweeps` package, MIT licence, the engine
# behind `wandb[sweeps]`), vendored: that package pins numpy<2 and pulls scikit-learn.
_SCHEMA = Path(__file__).with_name("sweep_schema.json")
# the argument macros whose --key=value / key=value form `mlinguality run` understands
# the distributions this module samples (W&B's schema names more; they need its server)
_DISTRIBUTIONS = {
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform_values",
    "normal",
}
_ARG_MACROS = ("${args}", "${args_no_hyphens}", "${args_no_boolean_flags}")
_DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default


@dataclass
class SweepSpec:
    """A parsed W&B sweep file.

    Attributes:
        program: The script ``${program}`` stands for.
        method: ``grid`` or ``random`` (``bayes`` is refused locally).
        parameters: Parameter name -> W&B parameter spec (``value``, ``values``, distributions).
        command: The command template with W&B macros (``${args}``, ...).
        metric: W&B's metric block (recorded in the sweep table; grid/random do not use it).
        name: Sweep name (the group and folder names start with it).
        run_cap: Largest number of runs.
    """

    program: str
    method: str
    parameters: dict[str, dict[str, Any]]
    command: list[str] = field(default_factory=lambda: list(_DEFAULT_COMMAND))
    metric: dict[str, Any] = field(default_factory=dict)
    name: str = "sweep"
    run_cap: int | None = None

    @property
    def metric_name(self) -> str | None:
        return self.metric.get("name")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; errors are one line naming the file and the key."""
    path = Path(path)
    data = load_yaml(path, "sweep")  # duplicate keys refused, naming both lines
    try:
        return parse_sweep(data, default_name=path.stem)
    except MlingualityError as error:
        raise MlingualityError(f"sweep {path}: {error}") from None


def schema_violations(data: Any) -> list[str]:
    """Violations of W&B's sweep-config schema (what ``wandb sweep`` would reject), one per line.

    The JSON schema W&B's sweep engine validates with, plus its two checks that a schema cannot
    express: ``min < max`` and categorical ``probabilities`` that match ``values`` and sum to 1.

    >>> schema_violations({"method": "grid", "metric": {"name": "x", "goal": "maximise"},
    ...                    "parameters": {"a": {"values": [1]}}})
    ["'maximise' is not one of ['minimize', 'maximize']"]
    >>> schema_violations({"method": "random", "parameters": {"a": {"min": 2.0, "max": 1.0}}})
    ['parameters.a: min 2.0 is not less than max 1.0']
    """
    import jsonschema

    schema = json.loads(_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    found = [error.message for error in validator.iter_errors(data)]
    for name, spec in (data.get("parameters") or {}).items() if isinstance(data, dict) else []:
        if not isinstance(spec, dict):
            continue
        low, high = spec.get("min"), spec.get("max")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if numbers and low >= high:
            found.append(f"parameters.{name}: min {low} is not less than max {high}")
        probabilities = spec.get("probabilities")
        if isinstance(probabilities, list) and isinstance(spec.get("values"), list):
            if len(probabilities) != len(spec["values"]):
                found.append(f"parameters.{name}: values and probabilities differ in length")
            elif not math.isclose(sum(probabilities), 1.0, abs_tol=1e-6):
                found.append(f"parameters.{name}: probabilities do not sum to 1")
    return found


def parse_sweep(data: Any, default_name: str = "sweep") -> SweepSpec:
    """Check a sweep dict (the parsed YAML) against W&B's schema, then what runs locally."""
    if not isinstance(data, dict):
        raise MlingualityError("expected a mapping with method and parameters")
    violations = schema_violations(data)
    if violations:
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise MlingualityError(f"not a valid W&B sweep: {violations[0]}{more}")
    method = data["method"]
    if method in ("bayes", "custom"):
        raise MlingualityError(
            f"method {method!r} needs the W&B sweep server: run `wandb sweep FILE` then "
            "`wandb agent SWEEP_ID` (local sweeps run grid and random)"
        )
    parameters = data["parameters"]
    for name, spec in parameters.items():
        _check_parameter(str(name), spec, method)
    command = [str(part) for part in data.get("command", _DEFAULT_COMMAND)]
    if not any(macro in command for macro in _ARG_MACROS):
        raise MlingualityError(
            f"command: pass the parameters with one of {', '.join(_ARG_MACROS)} "
            "(mlinguality run reads --section.key=value or section.key=value)"
        )
    if "${program}" in command and "program" not in data:
        raise MlingualityError("program: missing, but the command uses ${program}")
    return SweepSpec(
        program=str(data.get("program", "")),
        method=method,
        parameters={str(k): dict(v) for k, v in parameters.items()},
        command=command,
        metric=dict(data.get("metric") or {}),
        name=str(data.get("name") or default_name),
        run_cap=data.get("run_cap"),
    )


def _distribution(spec: dict[str, Any]) -> str:
    """W&B's inferred distribution when none is named."""
    if "distribution" in spec:
        return str(spec["distribution"])
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        both_int = all(isinstance(spec[k], int) for k in ("min", "max"))
        return "int_uniform" if both_int else "uniform"
    return "unknown"


def _check_parameter(name: str, spec: dict[str, Any], method: str) -> None:
    """What W&B accepts but this local runner cannot do (the schema has already passed)."""
    where = f"parameters.{name}"
    if "parameters" in spec:
        raise MlingualityError(
            f"{where}: nested parameters are not supported; use dotted names like "
            "selectivity.top_rate"
        )
    dist = _distribution(spec)
    if dist not in _DISTRIBUTIONS:
        raise MlingualityError(f"{where}: distribution {dist!r} is not supported locally")
    if method == "grid" and dist not in ("constant", "categorical"):
        raise MlingualityError(f"{where}: grid sweeps need value or values, not {dist!r}")


def expand(spec: SweepSpec, count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The parameter assignments of every run, in order.

    Grid: the Cartesian product of every parameter's values (first parameter varies slowest),
    cut at ``count`` or ``run_cap``. Random: ``count`` (else ``run_cap``) independent draws.

    >>> spec = parse_sweep({"program": "p.py", "method": "grid", "parameters": {
    ...     "a": {"values": [1, 2]}, "b": {"values": ["x", "y"]}, "c": {"value": 0}}})
    >>> expand(spec)
    [{'a': 1, 'b': 'x', 'c': 0}, {'a': 1, 'b': 'y', 'c': 0}, {'a': 2, 'b': 'x', 'c': 0}, {'a': 2, 'b': 'y', 'c': 0}]
    """
    if count is not None and (isinstance(count, bool) or count < 1):
        raise MlingualityError(f"--count: must be a positive number of runs, got {count}")
    cap = count if count is not None else spec.run_cap
    names = list(spec.parameters)
    if spec.method == "grid":
        choices = [p["values"] if "values" in p else [p["value"]] for p in spec.parameters.values()]
        runs = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]
        return runs if cap is None else runs[:cap]
    if cap is None:
        raise MlingualityError("random sweeps need --count N (or run_cap in the file)")
    rng = random.Random(seed)
    return [{name: _sample(spec.parameters[name], rng) for name in names} for _ in range(cap)]


def check_runs(spec: SweepSpec, runs: list[dict[str, Any]], where: str = "sweep") -> None:
    """Refuse a sweep up front when a parameter is not a config key or a value is invalid.

    Each run's parameters are applied, as ``wandb agent`` passes them, to the default config,
    so every run that would fail on its arguments fails here instead, before any run starts.
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from mlinguality.run.config import RunConfig
    from mlinguality.run.overrides import agent_overrides, override_keys
    from mlinguality.sections import unknown_key_message

    keys = override_keys()
    for name in spec.parameters:
        if name not in keys:
            raise MlingualityError(
                f"{where}: parameters.{name}: {unknown_key_message(name, keys)}; "
                "sweep parameters must be config keys (section.key)"
            )
    for index, params in enumerate(runs):
        arguments = {name: {"value": value} for name, value in params.items()}
        argv = create_sweep_command_args({"args": arguments})["args"]
        try:
            RunConfig().with_overrides(agent_overrides(argv))
        except MlingualityError as error:
            raise MlingualityError(f"{where}: run {index} ({params}): {error}") from None


def _sample(spec: dict[str, Any], rng: random.Random) -> Any:
    dist = _distribution(spec)
    if dist == "constant":
        return spec["value"]
    if dist == "categorical":
        return rng.choices(spec["values"], weights=spec.get("probabilities"))[0]
    if dist == "normal":
        return rng.gauss(float(spec.get("mu", 0.0)), float(spec.get("sigma", 1.0)))
    low, high = spec["min"], spec["max"]
    if dist == "int_uniform":
        return rng.randint(int(low), int(high))
    if dist == "uniform":
        return rng.uniform(low, high)
    if dist == "q_uniform":
        q = spec.get("q", 1.0)
        return round(rng.uniform(low, high) / q) * q
    if dist == "log_uniform":  # min and max are natural logs
        return math.exp(rng.uniform(low, high))
    value = math.exp(rng.uniform(math.log(low), math.log(high)))  # *_log_uniform_values
    if dist == "q_log_uniform_values":
        q = spec.get("q", 1.0)
        value = round(value / q) * q
    return value


def agent_command(spec: SweepSpec, params: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """The argv ``wandb agent`` would run for ``params`` (plus ``extra`` args), using wandb's code.

    ``${interpreter}`` is this Python (the agent uses ``python`` from PATH).
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    arguments = {name: {"value": value} for name, value in {**params, **extra}.items()}
    variables = create_sweep_command_args({"args": arguments})
    variables["interpreter"] = [sys.executable]
    variables["program"] = [spec.program]
    variables["env"] = ["/usr/bin/env"] if os.name != "nt" else []
    command = create_sweep_command(list(spec.command))
    if command[:1] == ["mlinguality"]:  # the console script, run by this very interpreter
        command = [sys.executable, "-m", "mlinguality", *command[1:]]
    argv: list[str] = []
    for part in command:
        if part.startswith("${") and part.endswith("}"):
            argv += variables.get(part[2:-1]) or []
        else:
            argv.append(part)
    return argv


def run_name(sweep: str, index: int, params: dict[str, Any]) -> str:
    """A run name from the swept values: ``{sweep}-{index}-{leaf}={value}-...`` (folder-safe).

    >>> run_name("rate_mode", 3, {"selectivity.top_rate": 0.02, "model.spec": "Qwen/Qwen2.5-0.5B"})
    'rate_mode-003-top_rate=0.02-spec=Qwen_Qwen2.5-0.5B'
    """

    def text(value: Any) -> str:
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        return re.sub(r"[^\w.,=+-]", "_", str(value))

    parts = [f"{key.rsplit('.', 1)[-1]}={text(value)}" for key, value in params.items()]
    return "-".join([sweep, f"{index:03d}", *parts])[:120]


def run_sweep(
    path: str | Path,
    *,
    count: int | None = None,
    output_dir: str | Path = "runs",
    wandb_mode: str = "offline",
    seed: int = 0,
    dry_run: bool = False,
) -> Path:
    """Run every run of a sweep file, one after another; return the sweep table (CSV).

    Each run is a subprocess, as under ``wandb agent``. A failing run is recorded in the table
    (``status`` = its exit code) and the sweep goes on.
    """
    spec = load_sweep(path)
    runs = expand(spec, count=count, seed=seed)
    check_runs(spec, runs, where=f"sweep {path}")
    group = f"sweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir = Path(output_dir) / group
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.yaml").write_text(Path(path).read_text(encoding="utf-8"))
    table = sweep_dir / "sweep.csv"
    logger.info("sweep %s: %d runs (%s) into %s", spec.name, len(runs), spec.method, sweep_dir)
    rows: list[dict[str, Any]] = []
    for index, params in enumerate(runs):
        name = run_name(spec.name, index, params)
        extra = {
            "name": name,
            "output_dir": str(sweep_dir),
            "tracking.group": group,
            "tracking.wandb": wandb_mode,
        }
        argv = agent_command(spec, params, extra)
        logger.info("sweep run %d/%d: %s", index + 1, len(runs), " ".join(argv))
        row: dict[str, Any] = {"run": name, **params}
        if dry_run:
            row["command"] = " ".join(argv)
        else:
            start = time.perf_counter()
            status = subprocess.run(argv, check=False).returncode
            row["status"] = status
            row["seconds"] = round(time.perf_counter() - start, 1)
            run_dirs = sorted(sweep_dir.glob(f"{name}-*"))
            headline = _headline(run_dirs[-1] / "summary.json") if run_dirs else {}
            if spec.metric_name:  # the sweep's metric first, then everything else
                row[spec.metric_name] = headline.pop(spec.metric_name, None)
            row["run_dir"] = str(run_dirs[-1]) if run_dirs else ""
            row.update(headline)
            if status != 0:
                logger.warning("sweep run %s exited with status %d", name, status)
        rows.append(row)
        _write_table(table, rows)
    return table


def _headline(summary_path: Path) -> dict[str, Any]:
    """Scalar entries of a run's summary.json (nested keys joined with '/')."""
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return {}
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, (int, float, str, bool)) or node is None:
            flat[prefix] = node

    walk(summary, "")
    return flat


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    tmp.replace(path)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value
