"""The versioned artifact store: numbering, checksums, deduplication, tamper detection and name safety."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import tracemalloc
from pathlib import Path

import pytest

from runtel.errors import ArtifactError, ChecksumMismatchError
from runtel.store.artifacts import ArtifactStore, ArtifactVersion

MIB = 1 << 20


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "run_1234abcd"


@pytest.fixture
def store(run_dir: Path) -> ArtifactStore:
    return ArtifactStore(run_dir)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """The user's training script overwrites this file before every ``add``."""
    path = tmp_path / "work" / "checkpoint.pt"
    path.parent.mkdir()
    path.write_bytes(b"weights v0")
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "work" / "hf_model"
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 40)
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    return root


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


def tamper(path: Path, data: bytes) -> None:
    """Stored versions are read-only; a tamperer makes them writable first."""
    path.chmod(0o644)
    path.write_bytes(data)


def log_five(store: ArtifactStore, checkpoint: Path) -> list[bytes]:
    contents = [f"weights after epoch {epoch}".encode() * (epoch + 1) for epoch in range(5)]
    for data in contents:
        checkpoint.write_bytes(data)
        store.add(checkpoint)
    return contents


def test_five_checkpoints_are_numbered_with_their_sha256_and_size(
    store: ArtifactStore, checkpoint: Path
) -> None:
    contents = log_five(store, checkpoint)

    versions = store.versions("checkpoint.pt")

    assert [v.version for v in versions] == [1, 2, 3, 4, 5]
    assert [v.checksum for v in versions] == [sha256(data) for data in contents]
    assert [v.size for v in versions] == [len(data) for data in contents]


def test_versions_are_stored_in_the_seed_layout(
    store: ArtifactStore, checkpoint: Path, run_dir: Path
) -> None:
    contents = log_five(store, checkpoint)

    for number, data in enumerate(contents, start=1):
        path = run_dir / "versions" / "checkpoint.pt" / f"v{number}_checkpoint.pt"
        assert store.get("checkpoint.pt", number).path == str(path)
        assert path.read_bytes() == data


def test_latest_version_is_reachable_under_artifacts(
    store: ArtifactStore, checkpoint: Path, run_dir: Path
) -> None:
    contents = log_five(store, checkpoint)

    assert (run_dir / "artifacts" / "checkpoint.pt").read_bytes() == contents[-1]


def test_source_can_be_overwritten_right_after_add(store: ArtifactStore, checkpoint: Path) -> None:
    checkpoint.write_bytes(b"epoch 1")
    first = store.add(checkpoint)
    checkpoint.write_bytes(b"epoch 2 is longer")

    assert Path(first.path).read_bytes() == b"epoch 1"
    assert store.get("checkpoint.pt", 1).checksum == sha256(b"epoch 1")


def test_identical_content_logged_twice_is_stored_once(store: ArtifactStore, checkpoint: Path) -> None:
    first = store.add(checkpoint)
    second = store.add(checkpoint)

    assert second.version == 2
    assert os.stat(first.path).st_ino == os.stat(second.path).st_ino


def test_identical_content_under_two_names_is_stored_once(store: ArtifactStore, checkpoint: Path) -> None:
    best = store.add(checkpoint, "models/best.pt")
    last = store.add(checkpoint, "models/last.pt")

    assert os.stat(best.path).st_ino == os.stat(last.path).st_ino


def test_grouped_name_is_stored_under_its_folders(
    store: ArtifactStore, checkpoint: Path, run_dir: Path
) -> None:
    record = store.add(checkpoint, "models/best.pt")

    assert record.path == str(run_dir / "versions" / "models" / "best.pt" / "v1_best.pt")
    assert (run_dir / "artifacts" / "models" / "best.pt").read_bytes() == b"weights v0"


def test_get_detects_an_overwritten_byte(store: ArtifactStore, checkpoint: Path) -> None:
    log_five(store, checkpoint)
    stored = Path(store.get("checkpoint.pt", 3).path)
    data = bytearray(stored.read_bytes())
    data[5] ^= 0xFF
    tamper(stored, bytes(data))

    with pytest.raises(ChecksumMismatchError, match=r"v3.*expected sha256 [0-9a-f]{64}, found [0-9a-f]{64}"):
        store.get("checkpoint.pt", 3)


def test_get_detects_a_truncated_version(store: ArtifactStore, checkpoint: Path) -> None:
    log_five(store, checkpoint)
    stored = Path(store.get("checkpoint.pt").path)
    tamper(stored, stored.read_bytes()[:-1])

    with pytest.raises(ChecksumMismatchError, match=re.escape("v5_checkpoint.pt")):
        store.get("checkpoint.pt")


def test_get_detects_a_deleted_version(store: ArtifactStore, checkpoint: Path) -> None:
    Path(store.add(checkpoint).path).unlink()

    with pytest.raises(ChecksumMismatchError, match="found missing"):
        store.get("checkpoint.pt")


def test_get_without_verify_does_not_hash(store: ArtifactStore, checkpoint: Path) -> None:
    record = store.add(checkpoint)
    tamper(Path(record.path), b"changed")

    assert store.get("checkpoint.pt", verify=False) == record


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a\x00b",
        "..",
        "",
        "C:\\x",
        "C:/x",
        "a\\b",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "line\nbreak",
        "x" * 256,
        ".blobs/deadbeef",
    ],
)
def test_unsafe_name_is_rejected_and_nothing_is_written(
    store: ArtifactStore, checkpoint: Path, run_dir: Path, tmp_path: Path, name: str
) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metadata.json").write_text("{}")
    before = listing(tmp_path)

    with pytest.raises(ArtifactError, match="unsafe artifact name"):
        store.add(checkpoint, name)

    assert listing(tmp_path) == before
    assert os.listdir(run_dir.parent) == [run_dir.name]
    assert os.listdir(run_dir) == ["metadata.json"]


def test_rejection_names_the_name_and_the_rule(store: ArtifactStore, checkpoint: Path) -> None:
    with pytest.raises(ArtifactError, match=r"'a/\.\./\.\./b'.*'\.\.' component"):
        store.add(checkpoint, "a/../../b")


def test_name_that_is_a_folder_of_another_name_is_rejected(store: ArtifactStore, checkpoint: Path) -> None:
    store.add(checkpoint, "models/best.pt")

    with pytest.raises(ArtifactError, match=re.escape("clashes with existing artifact 'models/best.pt'")):
        store.add(checkpoint, "models")


def test_names_differing_only_in_case_are_rejected_as_on_macos(
    store: ArtifactStore, checkpoint: Path, run_dir: Path
) -> None:
    store.add(checkpoint, "models/Best.pt")
    before = listing(run_dir)
    for clash in ("models/best.pt", "MODELS/BEST.PT", "Models"):
        with pytest.raises(ArtifactError, match=re.escape("models/Best.pt")):
            store.add(checkpoint, clash)
    assert listing(run_dir) == before
    assert [v.version for v in store.versions("models/Best.pt")] == [1]


def test_missing_source_names_the_path(store: ArtifactStore, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.pt"

    with pytest.raises(ArtifactError, match=re.escape("nowhere/model.pt")):
        store.add(missing)


def test_directory_artifact_round_trips(store: ArtifactStore, model_dir: Path, run_dir: Path) -> None:
    files = {
        "config.json": (model_dir / "config.json").read_bytes(),
        "tokenizer/vocab.txt": (model_dir / "tokenizer" / "vocab.txt").read_bytes(),
        "weights.bin": (model_dir / "weights.bin").read_bytes(),
    }
    manifest = [
        {"path": path, "sha256": sha256(data), "size": len(data)} for path, data in sorted(files.items())
    ]

    record = store.add(model_dir)

    stored = run_dir / "versions" / "hf_model" / "v1_hf_model"
    assert record.path == str(stored)
    assert {path: (stored / path).read_bytes() for path in files} == files
    assert record.size == sum(len(data) for data in files.values())
    canonical = json.dumps(manifest, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    assert record.checksum == sha256(canonical.encode())
    assert store.get("hf_model") == record


def test_directory_tamper_names_the_damaged_file(store: ArtifactStore, model_dir: Path) -> None:
    record = store.add(model_dir)
    tamper(Path(record.path) / "tokenizer" / "vocab.txt", b"a\nb\nX\n")

    with pytest.raises(ChecksumMismatchError, match=re.escape("tokenizer/vocab.txt")):
        store.get("hf_model")


def test_reopened_store_continues_numbering(store: ArtifactStore, checkpoint: Path, run_dir: Path) -> None:
    log_five(store, checkpoint)

    reopened = ArtifactStore(run_dir)
    checkpoint.write_bytes(b"after restart")
    sixth = reopened.add(checkpoint)

    assert sixth.version == 6
    assert reopened.versions("checkpoint.pt")[:5] == store.versions("checkpoint.pt")


def test_step_kind_and_metadata_survive_reopening(
    store: ArtifactStore, checkpoint: Path, run_dir: Path
) -> None:
    record = store.add(checkpoint, step=1200, kind="model", metadata={"framework": "pytorch"})

    reopened = ArtifactStore(run_dir).get("checkpoint.pt")

    assert reopened == record
    assert (reopened.step, reopened.kind, reopened.metadata) == (1200, "model", {"framework": "pytorch"})


def test_artifacts_json_lists_every_version_with_relative_paths(
    store: ArtifactStore, checkpoint: Path, run_dir: Path
) -> None:
    log_five(store, checkpoint)

    document = json.loads((run_dir / "artifacts.json").read_text())

    entries = document["artifacts"]["checkpoint.pt"]
    expected_paths = [f"versions/checkpoint.pt/v{n}_checkpoint.pt" for n in range(1, 6)]
    assert [entry["path"] for entry in entries] == expected_paths
    assert entries[0] == {**store.get("checkpoint.pt", 1).to_dict(), "path": entries[0]["path"]}


def test_record_round_trips_through_dict(store: ArtifactStore, checkpoint: Path) -> None:
    record = store.add(checkpoint, metadata={"epoch": 3})

    assert ArtifactVersion.from_dict(record.to_dict()) == record


def test_get_indexes_versions_like_python(store: ArtifactStore, checkpoint: Path) -> None:
    log_five(store, checkpoint)

    indexes = (1, 2, 5, -1, -2, -5)
    assert [store.get("checkpoint.pt", index).version for index in indexes] == [1, 2, 5, 5, 4, 1]


@pytest.mark.parametrize("index", [0, 6, -6])
def test_get_out_of_range_version_is_rejected(store: ArtifactStore, checkpoint: Path, index: int) -> None:
    log_five(store, checkpoint)

    with pytest.raises(ArtifactError, match=r"versions 1\.\.5"):
        store.get("checkpoint.pt", index)


def test_unknown_name_lists_the_known_names(store: ArtifactStore, checkpoint: Path) -> None:
    store.add(checkpoint)
    store.add(checkpoint, "models/best.pt")

    with pytest.raises(ArtifactError, match=r"'ckpt\.pt'.*known names: 'checkpoint\.pt', 'models/best\.pt'"):
        store.versions("ckpt.pt")
    assert store.names() == ["checkpoint.pt", "models/best.pt"]


def test_unversioned_add_keeps_a_single_version(
    store: ArtifactStore, checkpoint: Path, run_dir: Path
) -> None:
    store.add(checkpoint, version=False)
    old_blob = run_dir / "versions" / ".blobs" / sha256(b"weights v0")
    checkpoint.write_bytes(b"weights v1")

    record = store.add(checkpoint, version=False)

    assert store.versions("checkpoint.pt") == [record]
    assert (record.version, record.checksum) == (1, sha256(b"weights v1"))
    assert Path(record.path).read_bytes() == b"weights v1"
    assert not old_blob.exists()


def test_opening_a_store_writes_nothing(run_dir: Path, tmp_path: Path) -> None:
    store = ArtifactStore(run_dir)

    assert store.names() == []
    assert listing(tmp_path) == set()


def test_concurrent_adds_get_distinct_version_numbers(store: ArtifactStore, tmp_path: Path) -> None:
    sources = []
    for index in range(8):
        source = tmp_path / f"src{index}" / "shard.bin"
        source.parent.mkdir()
        source.write_bytes(f"shard {index}".encode())
        sources.append(source)
    threads = [threading.Thread(target=store.add, args=(source,)) for source in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    versions = store.versions("shard.bin")
    assert [v.version for v in versions] == list(range(1, 9))
    assert sorted(v.checksum for v in versions) == sorted(sha256(f"shard {i}".encode()) for i in range(8))
    assert all(store.get("shard.bin", v.version) == v for v in versions)


def test_large_file_is_copied_and_hashed_in_bounded_memory(store: ArtifactStore, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    expected = hashlib.sha256()
    with big.open("wb") as handle:
        for index in range(300):
            chunk = index.to_bytes(4, "little") * (MIB // 4)
            expected.update(chunk)
            handle.write(chunk)

    tracemalloc.start()
    try:
        record = store.add(big)
        store.get("big.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (record.size, record.checksum) == (300 * MIB, expected.hexdigest())
    assert peak < 32 * MIB
