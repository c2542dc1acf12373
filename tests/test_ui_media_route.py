"""The UI server's media route: it sends a file only when a record of a listed run names it, keeps inside
the run folder whatever the URL or the folder holds, and never lets a served file run scripts."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.store.query import StoredRun
from runtel.ui import BackgroundServer, create_app
from runtel.ui.media_data import media_url


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    figure.add_subplot().plot([0, 1], [1, 0])
    return figure


@pytest.fixture
def stored(base_dir: Path) -> StoredRun:
    with runtel.init(project="p", name="figs", base_dir=str(base_dir)) as run:
        run.log_figure(_figure(), "roc", step=3)
    return runtel.Store(base_dir).run(run.id)


@pytest.fixture
def client(base_dir: Path, stored: StoredRun) -> Any:
    return create_app(base_dir).server.test_client()


def test_a_listed_figure_is_sent_as_png_with_scripts_forbidden(client: Any, stored: StoredRun) -> None:
    response = client.get(media_url(stored.id, "plots/roc_step3.png"))
    assert response.status_code == 200
    assert response.data == (stored.dir / "plots" / "roc_step3.png").read_bytes()
    assert response.mimetype == "image/png"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_file_of_the_run_no_record_lists_is_not_found(client: Any, stored: StoredRun) -> None:
    for relative in ("metadata.json", "events.jsonl", "plots/roc_step4.png", "plots/../metadata.json"):
        assert client.get(media_url(stored.id, relative)).status_code == 404, relative


def test_an_unknown_or_partial_run_id_is_not_found(client: Any, stored: StoredRun) -> None:
    for run_id in ("0" * 32, stored.id[:8], stored.dir.name, stored.name):
        assert client.get(media_url(run_id, "plots/roc_step3.png")).status_code == 404, run_id


def test_a_listed_file_swapped_for_a_link_out_of_the_folder_is_forbidden(
    client: Any, stored: StoredRun, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"private")
    figure = stored.dir / "plots" / "roc_step3.png"
    assert client.get(media_url(stored.id, "plots/roc_step3.png")).status_code == 200  # indexed, then swapped
    figure.unlink()
    figure.symlink_to(secret)
    response = client.get(media_url(stored.id, "plots/roc_step3.png"))
    assert response.status_code == 403 and b"private" not in response.data


def test_a_record_pointing_outside_the_run_serves_nothing(
    client: Any, stored: StoredRun, base_dir: Path
) -> None:
    (base_dir / "plots").mkdir()
    (base_dir / "plots" / "other.png").write_bytes(b"another folder")
    line = {"type": "figure", "name": "x", "path": "../plots/other.png", "step": 1, "time": 0.0}
    with (stored.dir / "events.jsonl").open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    assert client.get(media_url(stored.id, "../plots/other.png")).status_code == 404
    assert client.get(media_url(stored.id, "plots/roc_step3.png")).status_code == 200


def test_a_listed_file_of_an_unknown_type_is_a_download(client: Any, stored: StoredRun) -> None:
    line = {"type": "figure", "name": "page", "path": "plots/page_step0.html", "step": 0, "time": 0.0}
    (stored.dir / "plots" / "page_step0.html").write_text("<script>alert(1)</script>")
    with (stored.dir / "events.jsonl").open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    response = client.get(media_url(stored.id, "plots/page_step0.html"))
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment")


@pytest.fixture
def server(base_dir: Path, stored: StoredRun) -> Iterator[BackgroundServer]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    served = BackgroundServer(create_app(base_dir))
    yield served
    served.close()


def test_dot_segments_sent_raw_over_http_are_not_followed(
    server: BackgroundServer, stored: StoredRun
) -> None:
    """A client that does not normalise ``..`` (curl --path-as-is) reaches the route with them intact."""
    connection = http.client.HTTPConnection(server.server.host, server.server.port, timeout=10)
    for path in (
        f"/_runtel/media/{stored.id}/plots/../../../../etc/passwd",
        f"/_runtel/media/{stored.id}/%2e%2e/%2e%2e/metadata.json",
    ):
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 404 and b"root:" not in response.read(), path
    connection.request("GET", f"/_runtel/media/{stored.id}//etc/passwd")
    response = connection.getresponse()  # not the route's: the page's catch-all answers with the page
    assert response.getheader("Content-Type", "").startswith("text/html") and b"root:" not in response.read()
    connection.close()


@pytest.fixture
def media_run(base_dir: Path) -> StoredRun:
    import numpy as np

    with runtel.init(project="p", name="media", base_dir=str(base_dir)) as run:
        run.log_image("samples", np.full((4, 4, 3), 9, dtype=np.uint8), step=1)
        run.log_image("exact", np.ones((2, 2), dtype=np.float64), step=1)
        cell = runtel.Image(np.full((2, 2), 200, dtype=np.uint8))
        run.log_table("preds", [[cell, 1]], columns=["image", "label"], step=1)
    return runtel.Store(base_dir).run(run.id)


def _relative(run: StoredRun, path: Path) -> str:
    return path.relative_to(run.dir).as_posix()


def test_a_logged_image_is_sent_and_may_be_kept_by_the_browser(base_dir: Path, media_run: StoredRun) -> None:
    client = create_app(base_dir).server.test_client()
    ((_, item),) = media_run.media("samples")
    response = client.get(media_url(media_run.id, _relative(media_run, item.path)))
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.data == item.read_bytes()
    assert response.headers["Cache-Control"] == "private, max-age=31536000, immutable"


def test_an_exact_array_is_a_download_and_its_preview_an_image(base_dir: Path, media_run: StoredRun) -> None:
    client = create_app(base_dir).server.test_client()
    ((_, item),) = media_run.media("exact")
    assert item.preview is not None
    exact = client.get(media_url(media_run.id, _relative(media_run, item.path)))
    assert exact.mimetype == "application/octet-stream" and exact.data == item.read_bytes()
    assert client.get(media_url(media_run.id, _relative(media_run, item.preview))).mimetype == "image/png"


def test_an_image_cell_is_sent_only_for_the_table_that_holds_it(base_dir: Path, media_run: StoredRun) -> None:
    client = create_app(base_dir).server.test_client()
    ((_, table),) = media_run.media("preds")
    cell = table.to_pandas()["image"][0]
    url = media_url(media_run.id, _relative(media_run, cell.path))
    response = client.get(f"{url}?table={_relative(media_run, table.path)}")
    assert response.status_code == 200 and response.data == cell.read_bytes()
    assert client.get(url).status_code == 404  # no record names the cell itself
    ((_, image),) = media_run.media("samples")
    assert client.get(f"{url}?table={_relative(media_run, image.path)}").status_code == 404  # not a table
    assert client.get(f"{url}?table=../metadata.json").status_code == 404


def test_a_preview_or_image_cell_changed_on_disk_is_not_served(base_dir: Path, media_run: StoredRun) -> None:
    import os

    client = create_app(base_dir).server.test_client()
    ((_, exact),) = media_run.media("exact")
    ((_, table),) = media_run.media("preds")
    cell = table.to_pandas()["image"][0]
    assert exact.preview is not None
    for path in (exact.preview, cell.path):
        os.chmod(path, 0o644)
        path.write_bytes(path.read_bytes() + b"\x00")
    assert client.get(media_url(media_run.id, _relative(media_run, exact.preview))).status_code == 403
    url = media_url(media_run.id, _relative(media_run, cell.path))
    assert client.get(f"{url}?table={_relative(media_run, table.path)}").status_code == 403
