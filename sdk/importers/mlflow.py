"""Import MLflow runs through ``MlflowClient``, against any tracking URI (a file store, SQLite, a server).

Every metric's full history (``get_metric_history``), params (strings in MLflow, kept as strings),
tags (user tags become runtel tags ``key=value``; all tags stay in the metadata), the note
(``mlflow.note.content``), status and times, every artifact file and every logged model of the run
(MLflow 3's ``log_model``; a directory artifact ``models/<name>`` of kind ``model``), downloaded, then
copied into the artifact store with its SHA-256. MLflow keeps times in milliseconds: reported as
``source_time_milliseconds``. MLflow's ``system/...`` metrics are the run's system series.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from runtel.errors import ConfigError, MissingExtraError
from runtel.importers._source import Pending, Series, Skipped, SourceFile, SourceRun
from runtel.records import RunStatus

SOURCE = "mlflow"
_STATUS: dict[str, RunStatus] = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "killed"}
_NOTE = "mlflow.note.content"


def discover(
    path: str | None = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_id: str | None = None,
) -> Iterator[Pending | Skipped]:
    """Every run of the tracking store (or of ``experiment``, or the one ``run_id``)."""
    client = _client(tracking_uri or path)
    uri = client.tracking_uri if hasattr(client, "tracking_uri") else str(tracking_uri or path)
    if run_id is not None:
        try:
            runs = [client.get_run(run_id)]
        except Exception as exc:
            yield Skipped(f"{uri} run {run_id}", f"no such run: {exc}")
            return
    else:
        runs = list(_runs(client, experiment))
    names = {e.experiment_id: e.name for e in client.search_experiments(view_type=_all_views())}
    for found in runs:
        info = found.info
        yield Pending(
            source=SOURCE,
            source_id=f"{info.experiment_id}/{info.run_id}",
            source_path=f"{uri}#{info.run_id}",
            fingerprint=_fingerprint(found),
            load=partial(read_run, client, found, uri, names.get(info.experiment_id, "")),
        )


def _fingerprint(found: Any) -> str:
    """Changes when the run ends, or gets new params or metric values (the latest value of each)."""
    state = [
        found.info.status,
        found.info.end_time,
        sorted(found.data.params),
        sorted(found.data.metrics.items()),
    ]
    return hashlib.sha256(repr(state).encode()).hexdigest()[:16]


def read_run(client: Any, found: Any, uri: str, experiment_name: str) -> SourceRun:
    info, data = found.info, found.data
    start = (info.start_time or 0) / 1000.0
    run = SourceRun(
        source=SOURCE,
        source_id="",
        source_path=f"{uri}#{info.run_id}",
        name=info.run_name or info.run_id,
        project=experiment_name,
        start_time=start,
        end_time=(info.end_time or info.start_time or 0) / 1000.0,
        config=dict(data.params),
        tags=tuple(
            f"{key}={value}" if value else key
            for key, value in data.tags.items()
            if not key.startswith("mlflow.")
        ),
        notes=data.tags.get(_NOTE),
        host=None,
        source_metadata={
            "tracking_uri": uri,
            "run_id": info.run_id,
            "experiment_id": info.experiment_id,
            "experiment_name": experiment_name,
            "artifact_uri": info.artifact_uri,
            "status": info.status,
            "tags": dict(data.tags),
            "git_commit": data.tags.get("mlflow.source.git.commit"),
        },
    )
    status = _STATUS.get(info.status)
    if status is None:
        run.status, run.error = "crashed", f"MLflow status was {info.status} when imported"
        run.report.add("status_mapped", 1, {"mlflow": info.status, "runtel": "crashed"})
    else:
        run.status = status
    run.report.add("params_as_strings", len(data.params), {"why": "MLflow keeps every param as a string"})
    for key in sorted(data.metrics):
        history = client.get_metric_history(info.run_id, key)
        run.metrics[key] = Series(
            np.asarray([m.step for m in history], dtype=np.int64),
            np.asarray([m.timestamp for m in history], dtype=np.float64) / 1000.0,
            np.asarray([m.value for m in history], dtype=np.float64),
        )
        run.report.add("source_time_milliseconds", len(history), {"metric": key, "points": len(history)})
        if history:
            run.end_time = max(run.end_time, max(m.timestamp for m in history) / 1000.0)
    run.files = _artifacts(client, info.run_id, run.end_time, run.scratch)
    run.files += _models(client, run, uri)
    return run


def _client(tracking_uri: str | None) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MissingExtraError(
            "importing from MLflow needs the mlflow package: pip install runtel[mlflow]"
        ) from exc
    if not tracking_uri:
        raise ConfigError("name the MLflow store: --tracking-uri sqlite:///mlflow.db (or http://host:port)")
    return MlflowClient(tracking_uri=tracking_uri)


def _all_views() -> Any:
    from mlflow.entities import ViewType

    return ViewType.ALL


def _runs(client: Any, experiment: str | None) -> Iterator[Any]:
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ConfigError(f"no MLflow experiment named {experiment!r} at {client.tracking_uri}")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments(view_type=_all_views())]
    token = None
    while True:
        page = client.search_runs(ids, max_results=1000, page_token=token, order_by=["attributes.start_time"])
        yield from page
        token = page.token
        if not token:
            return


def _artifacts(client: Any, run_id: str, when: float, scratch_dirs: list[Path]) -> list[SourceFile]:
    """Every artifact file, downloaded into a scratch folder the sink copies from (deleted after)."""
    listed = _listing(client, run_id, None)
    if not listed:
        return []
    scratch = Path(tempfile.mkdtemp(prefix="runtel-mlflow-"))
    scratch_dirs.append(scratch)
    with _no_download_bar():
        client.download_artifacts(run_id, "", str(scratch))
    return [
        SourceFile(scratch / relative, relative, when, metadata={"mlflow_path": relative})
        for relative in listed
    ]


@contextlib.contextmanager
def _no_download_bar() -> Iterator[None]:
    """MLflow draws its own tqdm bar on stderr for each download; runtel import draws one per run."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as bar

    before = os.environ.get(bar.name)
    os.environ[bar.name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(bar.name, None)
        else:
            os.environ[bar.name] = before


def _models(client: Any, run: SourceRun, uri: str) -> list[SourceFile]:
    """MLflow 3's logged models of this run (``log_model``), each a directory artifact ``models/<name>``."""
    import mlflow.artifacts

    info = run.source_metadata
    models: list[Any] = []
    token = None
    while True:
        try:
            page = client.search_logged_models(
                [info["experiment_id"]], filter_string=f"source_run_id = '{info['run_id']}'", page_token=token
            )
        except Exception as exc:  # a server older than MLflow 3 has no logged models
            run.report.add("models_not_listed", 1, {"why": f"{type(exc).__name__}: {exc}"})
            return []
        models.extend(page)
        token = page.token
        if not token:
            break
    files = []
    for model in models:
        scratch = Path(tempfile.mkdtemp(prefix="runtel-mlflow-model-"))
        run.scratch.append(scratch)
        with _no_download_bar():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model.artifact_location, dst_path=str(scratch), tracking_uri=uri
            )
        details = {
            "mlflow_model_id": model.model_id,
            "model_type": model.model_type,
            "status": str(model.status),
        }
        files.append(
            SourceFile(
                Path(local), f"models/{model.name}", model.creation_timestamp / 1000.0, None, "model", details
            )
        )
    return files


def _listing(client: Any, run_id: str, path: str | None) -> list[str]:
    found: list[str] = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found.extend(_listing(client, run_id, item.path))
        else:
            found.append(item.path)
    return found
