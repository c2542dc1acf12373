"""Names that become files or folders work on every OS, or are refused before anything is written."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

import runtel
from runtel.store import _portable


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00\x01weights")
    return path


def test_a_name_part_too_long_for_the_file_system_is_refused_and_leaves_nothing(
    run: runtel.Run, source: Path
) -> None:
    before = files_under(run.dir)
    limit = _portable.name_max(run.dir) - _portable.DERIVED_BYTES
    too_long = "é" * (limit // 2 + 1)  # two bytes each in UTF-8: few characters, too many bytes
    with pytest.raises(runtel.ArtifactError, match="bytes in UTF-8"):
        run.log_artifact(source, name=f"models/{too_long}")
    assert files_under(run.dir) == before


def test_the_longest_accepted_part_is_stored_and_read_back(run: runtel.Run, source: Path) -> None:
    limit = _portable.name_max(run.dir) - _portable.DERIVED_BYTES
    longest = "m" * limit
    stored = run.log_artifact(source, name=longest)
    run.log_artifact(source, name=longest)  # a second version: v2_<part> and its staging names fit too
    assert run.artifacts.get(longest, version=2).checksum == stored.checksum
    assert Path(run.artifacts.get(longest).path).read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("CON", "reserved device name"),
        ("models/nul.txt", "reserved device name"),
        ("Com1.tar.gz", "reserved device name"),
        ("lpt9", "reserved device name"),
        ("a:b", "drive"),
        ("models/a:b", "Windows does not allow"),
        ("what?.pt", "Windows does not allow"),
        ('say"hi"', "Windows does not allow"),
        ("models./best.pt", "ends with a dot"),
        ("best.pt ", "ends with a dot or a space"),
    ],
)
def test_names_windows_cannot_create_are_refused(
    run: runtel.Run, source: Path, name: str, match: str
) -> None:
    before = files_under(run.dir)
    with pytest.raises(runtel.ArtifactError, match=match):
        run.log_artifact(source, name=name)
    assert files_under(run.dir) == before


def test_names_that_differ_only_in_unicode_normalisation_collide(run: runtel.Run, source: Path) -> None:
    composed = unicodedata.normalize("NFC", "models/café.pt")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    run.log_artifact(source, name=composed)
    with pytest.raises(runtel.ArtifactError, match="NFC/NFD"):
        run.log_artifact(source, name=decomposed)
    with pytest.raises(runtel.ArtifactError, match="case"):
        run.log_artifact(source, name="MODELS/CAFÉ.PT")
    assert run.artifacts.names() == [composed]


def test_names_close_to_reserved_ones_are_fine(run: runtel.Run, source: Path) -> None:
    for name in ("CONFIG", "console.log", "nullable.txt", "com10", "models/.hidden", " lead"):
        run.log_artifact(source, name=name)
    assert len(run.artifacts.names()) == 6


@pytest.mark.parametrize(
    "name",
    ["CON", "nul.txt", "a:b", "trailing. ", "café", unicodedata.normalize("NFD", "café"), "x" * 300, "../up"],
)
def test_any_run_name_gets_a_portable_folder_and_keeps_its_exact_name(base_dir: Path, name: str) -> None:
    run = runtel.init(project="names", name=name, base_dir=str(base_dir))
    run.log({"loss": 1.0})
    run.finish()
    folder = run.dir.name
    assert run.dir.parent == base_dir
    assert _portable.part_rule(folder) is None
    assert folder.isascii() and len(folder) <= 64 + 9
    assert runtel.Store(base_dir).run(run.id).name == name


def test_run_names_folding_to_one_slug_get_distinct_folders(base_dir: Path) -> None:
    composed = unicodedata.normalize("NFC", "é")
    runs = [runtel.init(name=name, base_dir=str(base_dir)) for name in (composed, "É", os.sep.join("é"))]
    for run in runs:
        run.finish()
    assert len({run.dir for run in runs}) == 3
    assert {runtel.Store(base_dir).run(run.id).name for run in runs} == {composed, "É", "é"}


def test_figure_names_that_fold_together_are_refused(run: runtel.Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure = plt.figure()
    try:
        run.log_figure(figure, "curves/Loss.png")
        before = files_under(run.dir / "plots")
        with pytest.raises(runtel.ArtifactError, match="only in case"):
            run.log_figure(figure, "curves/loss.png")
        with pytest.raises(runtel.ArtifactError, match="reserved device name"):
            run.log_figure(figure, "curves/aux.png")
        assert files_under(run.dir / "plots") == before
        run.log_figure(figure, "curves/Loss.png", step=3)  # the same name again is fine
    finally:
        plt.close(figure)
    assert len(files_under(run.dir / "plots" / "curves")) == 2
