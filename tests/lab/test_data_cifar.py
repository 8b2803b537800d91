"""CIFAR loading: file layout, provenance (official / partial / unofficial), folder rules, safety, downloads."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import normlab.lab.data.cifar as cifar_module
import normlab.lab.data.download as download_module
from normlab.lab.data import (CIFAR_SPECS, DataNotFoundError, DownloadError, PartialDatasetWarning,
                              UnsafePickleError, load_cifar, restricted_load, restricted_loads,
                              write_cifar_folder)

SHARED_DATA = Path(os.environ.get("NORMLAB_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")


def _random_split(n: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return images, torch.randint(0, num_classes, (n,), generator=g)


def _make_folder(folder: Path, name: str = "cifar10", n_train: int = 25, n_test: int = 7):
    classes = 10 if name == "cifar10" else 100
    train, test = _random_split(n_train, classes, 0), _random_split(n_test, classes, 1)
    write_cifar_folder(folder, *train, *test, name=name)
    return train, test


@pytest.fixture(autouse=True)
def _fresh_warning_registry(monkeypatch):
    monkeypatch.setattr(cifar_module, "_WARNED", set())
    monkeypatch.delenv("NORMLAB_DATA", raising=False)


def _load_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialDatasetWarning)
        return load_cifar(*args, **kwargs)


# -- the file format -------------------------------------------------------------------------------------------
def test_python2_style_batch_layout(tmp_path):
    """A batch written by hand the way the Python 2 originals are (str keys, R/G/B planes per row) reads back
    pixel for pixel: image[n, c, y, x] == data[n, c * 1024 + y * 32 + x]."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    labels = [3, 1, 4, 1, 5, 9]
    for file_name in ["data_batch_1", "test_batch"]:
        with open(tmp_path / file_name, "wb") as handle:
            pickle.dump({"batch_label": "x", "labels": labels, "data": data}, handle, protocol=2)
    with open(tmp_path / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, handle, protocol=2)
    loaded = _load_quietly("cifar10", tmp_path)
    for n, c, y, x in [(0, 0, 0, 0), (1, 1, 5, 7), (5, 2, 31, 31), (3, 2, 0, 31)]:
        assert int(loaded.train_images[n, c, y, x]) == int(data[n, c * 1024 + y * 32 + x])
    assert loaded.train_labels.tolist() == labels and loaded.classes[9] == "c9"


@pytest.mark.parametrize("name, n_files", [("cifar10", 7), ("cifar100", 3)])
def test_round_trip_and_partial_provenance(tmp_path, name, n_files):
    (train_images, train_labels), (test_images, test_labels) = _make_folder(tmp_path / "data", name)
    with pytest.warns(PartialDatasetWarning, match="partial copy"):
        data = load_cifar(name, tmp_path / "data")
    assert torch.equal(data.train_images, train_images) and torch.equal(data.test_labels, test_labels)
    assert data.train_labels.dtype == torch.int64 and data.train_images.dtype == torch.uint8
    assert data.image_shape == (3, 32, 32) and data.num_classes == (10 if name == "cifar10" else 100)
    p = data.provenance
    assert (p.kind, p.complete, p.train_images, p.test_images) == ("partial", False, 25, 7)
    title = CIFAR_SPECS[name].title
    assert p.summary == (f"partial copy of {title}: 25 train / 7 test images of 50,000 / 10,000; "
                         f"{n_files} of {n_files} files differ from the published md5s")
    assert p.to_dict()["complete"] is False and len(p.to_dict()["files"]) == n_files
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per folder: the second load is silent
        load_cifar(name, tmp_path / "data")


@pytest.mark.parametrize("official_counts, kind", [((25, 7), "official"), ((20, 5), "unofficial")])
def test_official_only_when_every_md5_matches(tmp_path, monkeypatch, official_counts, kind):
    _make_folder(tmp_path)
    spec = CIFAR_SPECS["cifar10"]
    md5 = {name: hashlib.md5((tmp_path / name).read_bytes()).hexdigest()
           for name in ["batches.meta", "test_batch"] + [f for f, _ in spec.train_files]}
    fake = dataclasses.replace(
        spec, meta_file=(spec.meta_file[0], md5["batches.meta"]),
        train_files=tuple((f, md5[f]) for f, _ in spec.train_files),
        test_files=(("test_batch", md5["test_batch"] if kind == "official" else "0" * 32),),
        official_train=official_counts[0], official_test=official_counts[1])
    monkeypatch.setitem(CIFAR_SPECS, "cifar10", fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_cifar("cifar10", tmp_path)
    assert data.provenance.kind == kind and data.provenance.complete == (kind == "official")
    assert [w.category for w in caught] == ([] if kind == "official" else [PartialDatasetWarning])


def test_missing_batches_are_reported(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "data_batch_5").unlink()
    data = _load_quietly("cifar10", tmp_path)
    missing = [check for check in data.provenance.files if check.md5 is None]
    assert [check.name for check in missing] == ["data_batch_5"] and data.provenance.kind == "partial"
    assert len(data.train_labels) == 25 - 5  # 25 images over 5 files: 5 in the last one


# -- where the data is found -----------------------------------------------------------------------------------
@pytest.mark.parametrize("subfolder, via_env", [("", False), ("cifar-10-batches-py", False), ("cifar10", True),
                                                ("cifar10-subset", True), ("cifar-10", False)])
def test_folder_rule(tmp_path, monkeypatch, subfolder, via_env):
    _make_folder(tmp_path / subfolder if subfolder else tmp_path)
    if via_env:
        monkeypatch.setenv("NORMLAB_DATA", str(tmp_path))
    data = _load_quietly("cifar10", None if via_env else tmp_path)
    assert data.provenance.source == str((tmp_path / subfolder).resolve())


@pytest.mark.parametrize("data_dir, words", [
    (None, ["--data-dir", "NORMLAB_DATA", "download=True"]),
    ("missing", ["no CIFAR-10 files found from data_dir=", "cifar-10-batches-py", "--data-dir", "NORMLAB_DATA"]),
])
def test_missing_data_says_how_to_get_it(tmp_path, data_dir, words):
    with pytest.raises(DataNotFoundError) as info:
        load_cifar("cifar10", None if data_dir is None else tmp_path / data_dir)
    assert all(word in str(info.value) for word in words)


@pytest.mark.parametrize("name, error, words", [
    ("cifar1000", ValueError, "choose one of"),
    ("cifar10", ValueError, "uint8 array of shape"),
])
def test_bad_input(tmp_path, name, error, words):
    _make_folder(tmp_path)
    with open(tmp_path / "test_batch", "wb") as handle:  # float data instead of uint8
        pickle.dump({b"labels": [0], b"data": np.zeros((1, 3072), np.float32)}, handle, protocol=2)
    with pytest.raises(error, match=words):
        _load_quietly(name, tmp_path)


# -- the restricted unpickler ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32])
def test_plain_arrays_load_under_every_protocol(protocol, dtype):
    array = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    loaded = restricted_loads(pickle.dumps({b"data": array, "labels": [1, 2], "name": "x"}, protocol=protocol))
    assert np.array_equal(loaded[b"data"], array) and loaded[b"data"].dtype == dtype
    assert loaded["labels"] == [1, 2] and loaded["name"] == "x"


class _Exploit:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _object_array():
    return np.array([1, "x"], dtype=object)


EXPLOITS = [  # (description, callable building the payload from the marker path)
    ("os.system", lambda marker: _Exploit(os.system, f"touch {marker}")),
    ("builtins.eval", lambda marker: _Exploit(eval, f"open({str(marker)!r}, 'w')")),
    ("builtins.exec", lambda marker: _Exploit(exec, f"open({str(marker)!r}, 'w')")),
    ("subprocess.Popen", lambda marker: _Exploit(__import__("subprocess").Popen, ["touch", str(marker)])),
    ("numpy object dtype", lambda marker: _object_array()),
    ("_codecs.encode other codec", lambda marker: _Exploit(__import__("_codecs").encode, "x", "rot13")),
]


@pytest.mark.parametrize("description, build", EXPLOITS, ids=[e[0] for e in EXPLOITS])
def test_tampered_file_never_runs_code(tmp_path, description, build):
    _make_folder(tmp_path)
    marker = tmp_path / "pwned"
    payload = {b"labels": [0], b"data": np.zeros((1, 3072), np.uint8), b"extra": build(marker)}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafePickleError, match="refusing"):
        _load_quietly("cifar10", tmp_path)
    with pytest.raises(UnsafePickleError):
        restricted_load(tmp_path / "data_batch_1")
    assert not marker.exists()


# -- downloads (no network: a fake opener serves a locally built archive) --------------------------------------
def _archive(tmp_path: Path, members: list[tuple[str, bytes | None]] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        if members is None:
            _make_folder(tmp_path / "src" / "cifar-10-batches-py")
            archive.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        for name, content in members or []:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            else:
                info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def _serve(monkeypatch, payload: bytes | Exception, md5: str | None = None):
    def fake_urlopen(url, timeout=None):
        assert url == CIFAR_SPECS["cifar10"].url and timeout
        if isinstance(payload, Exception):
            raise payload
        return io.BytesIO(payload)
    monkeypatch.setattr(download_module, "urlopen", fake_urlopen)
    if md5 is not None:
        monkeypatch.setitem(CIFAR_SPECS, "cifar10", dataclasses.replace(CIFAR_SPECS["cifar10"], archive_md5=md5))


def test_download_with_good_md5(tmp_path, monkeypatch):
    payload = _archive(tmp_path)
    _serve(monkeypatch, payload, hashlib.md5(payload).hexdigest())
    data = _load_quietly("cifar10", tmp_path / "root", download=True, progress=False)
    assert data.provenance.train_images == 25 and (tmp_path / "root" / "cifar-10-batches-py").is_dir()
    assert os.listdir(tmp_path / "root") == ["cifar-10-batches-py"]  # no temporary files left


BAD_DOWNLOADS = [  # (description, archive members or None for a good archive, md5 override, expected words)
    ("wrong md5", None, "official", "md5 mismatch"),
    ("path traversal", [("cifar-10-batches-py/../../evil", b"x")], None, "escapes"),
    ("absolute path", [("/tmp/evil", b"x")], None, "escapes"),
    ("symlink", [("cifar-10-batches-py/link", None)], None, "link"),
    ("foreign folder", [("other/data_batch_1", b"x")], None, "outside the expected folder"),
    ("network down", urllib.error.URLError("no route"), None, "--data-dir"),
]


@pytest.mark.parametrize("description, members, md5, words", BAD_DOWNLOADS, ids=[b[0] for b in BAD_DOWNLOADS])
def test_bad_download_leaves_nothing(tmp_path, monkeypatch, description, members, md5, words):
    if isinstance(members, Exception):
        _serve(monkeypatch, members)
    else:
        payload = _archive(tmp_path, members)
        _serve(monkeypatch, payload, None if md5 == "official" else hashlib.md5(payload).hexdigest())
    with pytest.raises(DownloadError, match=words):
        load_cifar("cifar10", tmp_path / "root", download=True, progress=False)
    assert os.listdir(tmp_path / "root") == []


# -- the shared real subset ------------------------------------------------------------------------------------
@pytest.mark.skipif(not (SHARED_DATA / "cifar10-subset").is_dir(),
                    reason=f"the real CIFAR-10 subset is not at {SHARED_DATA}/cifar10-subset (set NORMLAB_DATA)")
def test_shared_subset_is_reported_as_partial():
    folder = SHARED_DATA / "cifar10-subset"
    with pytest.warns(PartialDatasetWarning, match="8,068 train / 1,017 test images of 50,000 / 10,000"):
        data = load_cifar("cifar10", folder)
    p = data.provenance
    assert (p.kind, p.complete, p.train_images, p.test_images) == ("partial", False, 8068, 1017)
    published = dict(line.split()[::-1] for line in (folder / "MD5SUMS").read_text().splitlines())
    assert {check.name: check.md5 for check in p.files} == published  # the folder's own checksum list
    assert [check.name for check in p.files if check.matches] == ["batches.meta"]  # the one official file
    per_class = torch.bincount(data.train_labels, minlength=10)
    assert per_class.min() >= 776 and per_class.max() <= 856  # as PROVENANCE.md says
    pixels = data.train_images.double() / 255  # real images: statistics near the published full-set ones
    assert torch.allclose(pixels.mean((0, 2, 3)), torch.tensor(data.mean, dtype=torch.float64), atol=5e-3)
    assert torch.allclose(pixels.std((0, 2, 3)), torch.tensor(data.std, dtype=torch.float64), atol=5e-3)
