"""The data loading layer: every reference kind, and every input it refuses.

Each test builds its data in ``tmp_path``, which serves as the data directory.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.data import _torchvision_arrays, check_reference, load_dataset
from engine.dataset import Dataset
from engine.errors import DataError
from engine.safefiles import check_npz, resolve_inside
from engine.specs import DatasetSpec, Limits
from tests.support.mnist import write_mnist

RNG = np.random.default_rng(0)


def load(data_dir: Path, uri: str, **options) -> Dataset:
    """Load ``uri`` with the remaining options split between spec and call."""
    spec_keys = {"limit", "label_column"}
    spec = DatasetSpec(uri=uri, **{k: v for k, v in options.items() if k in spec_keys})
    call = {k: v for k, v in options.items() if k not in spec_keys}
    return load_dataset(spec, data_dir=data_dir, **call)


def refused(data_dir: Path, uri: str, message: str, **options) -> DataError:
    """Assert that loading ``uri`` raises a DataError containing ``message``."""
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        load(data_dir, uri, **options)
    return caught.value


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def tabular(m: int = 40, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.normal(5.0, 3.0, size=(m, d))
    y = np.arange(m) % 3
    return x, y


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- scikit-learn and torchvision ----------------------------------------------


def test_sklearn_digits_is_standardised(tmp_path):
    data = load(tmp_path, "sklearn:digits")
    assert data.name == "sklearn:digits"
    assert data.size == 1797 and data.input_shape == (64,)
    assert data.num_classes == 10
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    varying = data.x.std(dim=0) > 0
    assert torch.allclose(data.x.mean(dim=0), torch.zeros(64), atol=1e-5)
    assert torch.allclose(data.x[:, varying].std(dim=0, correction=0), torch.ones(1))
    assert not varying.all()  # digits has constant pixels: left at 0
    assert torch.all(data.x[:, ~varying] == 0)


def test_torchvision_mnist_from_idx_files(tmp_path):
    images = RNG.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    write_mnist(tmp_path, images, labels)
    data = load(tmp_path, "torchvision:MNIST")
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    expected = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    assert torch.allclose(data.x, expected)
    assert data.y.tolist() == labels.tolist()


def test_torchvision_missing_files_without_download(tmp_path):
    error = refused(tmp_path, "torchvision:MNIST", "PLATEAU_ALLOW_DOWNLOAD")
    assert "'MNIST/raw' under the data directory" in error.message
    assert str(tmp_path) not in error.message  # no server paths in messages
    assert error.field == "dataset.uri"


def test_cifar_style_arrays_become_channels_first():
    data = RNG.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    source = SimpleNamespace(data=data, targets=[0, 1, 2, 1, 0], classes=list("abc"))
    raw = _torchvision_arrays(source)
    assert raw.x.shape == (5, 3, 32, 32) and raw.num_classes == 3
    assert np.array_equal(raw.x[2, 1], data[2, :, :, 1])
    assert raw.y.tolist() == [0, 1, 2, 1, 0]


def test_unknown_torchvision_name(tmp_path):
    refused(tmp_path, "torchvision:SVHN", "unknown torchvision data set 'SVHN'")


# --- files ------------------------------------------------------------------------


def test_npz_table(tmp_path):
    x, y = tabular()
    save_npz(tmp_path / "t.npz", x=x, y=y)
    data = load(tmp_path, "file:t.npz")
    assert data.input_shape == (3,) and data.num_classes == 3
    assert torch.allclose(data.x.mean(dim=0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(data.x.std(dim=0, correction=0), torch.ones(3), atol=1e-5)
    assert data.y.tolist() == y.tolist()


def test_npz_grey_images_get_a_channel(tmp_path):
    x = RNG.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    save_npz(tmp_path / "i.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]))
    data = load(tmp_path, "file:i.npz")
    assert data.input_shape == (1, 5, 4)
    assert float(data.x.max()) <= 1.0
    assert torch.allclose(data.x[:, 0], torch.from_numpy(x / 255).float())


def test_npz_float_images_kept_as_they_are(tmp_path):
    x = RNG.random((4, 3, 2, 2)).astype(np.float32)
    save_npz(tmp_path / "f.npz", x=x, y=np.array([0, 1, 0, 1]))
    assert torch.equal(load(tmp_path, "file:f.npz").x, torch.from_numpy(x))


def test_csv_text_labels_and_constant_column(tmp_path):
    write_csv(
        tmp_path / "t.csv",
        "a,flat,label,b\n1,7,dog,2\n2,7,cat,4\n3,7,dog,6\n4,7,bird,9\n",
    )
    data = load(tmp_path, "file:t.csv")
    assert data.input_shape == (3,)  # a, flat, b
    assert data.y.tolist() == [2, 1, 2, 0]  # bird < cat < dog
    assert data.num_classes == 3
    assert torch.all(data.x[:, 1] == 0)
    assert torch.allclose(data.x[:, 0].mean(), torch.tensor(0.0), atol=1e-6)


def test_csv_label_column_defaults_to_y_then_last(tmp_path):
    write_csv(tmp_path / "y.csv", "y,a\n0,1.5\n1,2.5\n")
    write_csv(tmp_path / "last.csv", "a,target\n1.5,1\n2.5,0\n")
    assert load(tmp_path, "file:y.csv").y.tolist() == [0, 1]
    assert load(tmp_path, "file:last.csv").y.tolist() == [1, 0]


def test_csv_named_label_column(tmp_path):
    write_csv(tmp_path / "t.csv", "klass,a,b\n1,0.5,3\n0,1.5,4\n1,2.5,5\n")
    data = load(tmp_path, "file:t.csv", label_column="klass")
    assert data.y.tolist() == [1, 0, 1] and data.input_shape == (2,)


def test_parquet(tmp_path):
    x, y = tabular(12, 2)
    frame = pd.DataFrame({"f0": x[:, 0], "f1": x[:, 1], "label": y})
    frame.to_parquet(tmp_path / "t.parquet")
    data = load(tmp_path, "file:t.parquet")
    assert data.size == 12 and data.input_shape == (2,) and data.num_classes == 3
    assert data.y.tolist() == y.tolist()


def write_png(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, colour).save(path)


def test_image_folder(tmp_path):
    for index, name in enumerate(["cat", "dog"]):
        for j in range(3):
            write_png(tmp_path / "pets" / name / f"{j}.png", (8, 6), "RGB", index * 100)
    data = load(tmp_path, "file:pets")
    assert data.size == 6 and data.input_shape == (3, 6, 8)
    assert data.num_classes == 2 and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x[3, 0, 0, 0].item() == pytest.approx(100 / 255)
    assert data.x[3, 2, 0, 0].item() == pytest.approx(155 / 255)


def test_image_folder_of_grey_images_has_one_channel(tmp_path):
    for name in ["a", "b"]:
        write_png(tmp_path / "g" / name / "0.png", (4, 4), "L", 51)
    data = load(tmp_path, "file:g")
    assert data.input_shape == (1, 4, 4)
    assert torch.allclose(data.x, torch.full_like(data.x, 0.2))


def test_image_folder_sizes_must_agree(tmp_path):
    write_png(tmp_path / "p" / "a" / "0.png", (4, 4), "L", 0)
    write_png(tmp_path / "p" / "b" / "0.png", (5, 4), "L", 0)
    refused(tmp_path, "file:p", "differ in size")


def test_image_folder_needs_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    refused(tmp_path, "file:flat", "ImageFolder layout")


def test_image_folder_refuses_symlinked_folders(tmp_path):
    write_png(tmp_path / "elsewhere" / "0.png", (4, 4), "L", 0)
    write_png(tmp_path / "p" / "a" / "0.png", (4, 4), "L", 0)
    (tmp_path / "p" / "b").symlink_to(tmp_path / "elsewhere")
    refused(tmp_path, "file:p", "symlinked folder")


# --- limit --------------------------------------------------------------------------


def test_limit_is_deterministic_per_seed(tmp_path):
    first = load(tmp_path, "sklearn:iris", limit=30, seed=7)
    again = load(tmp_path, "sklearn:iris", limit=30, seed=7)
    other = load(tmp_path, "sklearn:iris", limit=30, seed=8)
    assert first.size == 30
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not torch.equal(first.x, other.x)


def test_limit_larger_than_the_data(tmp_path):
    error = refused(tmp_path, "sklearn:iris", "has only 150 samples", limit=151)
    assert error.field == "dataset.limit"


# --- references and paths ----------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file:../secret.npz", "'..' component"),
        ("file:a/../../secret.npz", "'..' component"),
        ("file:/etc/passwd", "absolute path"),
        ("file:%2e%2e%2fsecret.npz", "percent-encoded"),
        ("file:%252e%252e%252fsecret.npz", "percent-encoded"),
        ("http://example.com/x.csv", "unknown dataset reference"),
        ("digits", "unknown dataset reference"),
        ("sklearn:mnist", "unknown scikit-learn data set 'mnist'"),
        ("file:missing.npz", "no file or folder 'missing.npz'"),
        ("file:data.txt", "not a supported file kind"),
    ],
)
def test_bad_references(tmp_path, uri, message):
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        check_reference(DatasetSpec(uri=uri), data_dir=tmp_path)
    assert caught.value.field == "dataset.uri"


def test_nul_byte_refused(tmp_path):
    spec = DatasetSpec.model_construct(uri="file:a\x00.npz")
    with pytest.raises(DataError, match="NUL byte"):
        check_reference(spec, data_dir=tmp_path)


def test_symlink_out_of_the_data_directory(tmp_path):
    data_dir, outside = tmp_path / "data", tmp_path / "outside"
    data_dir.mkdir()
    x, y = tabular()
    outside.mkdir()
    save_npz(outside / "secret.npz", x=x, y=y)
    (data_dir / "link.npz").symlink_to(outside / "secret.npz")
    refused(data_dir, "file:link.npz", "leads outside the data directory")


def test_single_npy_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    refused(tmp_path, "file:x.npy", "np.savez(path, x=x, y=y)")


def test_label_column_only_for_tables(tmp_path):
    error = refused(
        tmp_path, "sklearn:iris", "label_column applies only", label_column="y"
    )
    assert error.field == "dataset.label_column"


def test_missing_label_column(tmp_path):
    write_csv(tmp_path / "t.csv", "a,b\n1,0\n2,1\n")
    error = refused(tmp_path, "file:t.csv", "no column 'kind'", label_column="kind")
    assert error.field == "dataset.label_column"


def test_file_over_the_size_limit(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,0\n2,1\n")
    refused(
        tmp_path, "file:t.csv", "limit for a data file", limits=Limits(max_file_bytes=8)
    )


def test_dataset_over_the_memory_limit(tmp_path):
    limits = Limits(max_dataset_bytes=10_000)
    refused(tmp_path, "sklearn:digits", "set a smaller limit", limits=limits)


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet="./\\%2eEfF5cC0ab", max_size=12))
def test_accepted_paths_stay_inside(tmp_path_factory, relative):
    data_dir = tmp_path_factory.getbasetemp() / "resolve"
    data_dir.mkdir(exist_ok=True)
    try:
        resolved = resolve_inside(data_dir, relative)
    except DataError:
        return
    assert resolved.is_relative_to(data_dir.resolve())


# --- bad data -----------------------------------------------------------------------


def test_empty_csv(tmp_path):
    write_csv(tmp_path / "h.csv", "a,b,label\n")
    write_csv(tmp_path / "e.csv", "")
    refused(tmp_path, "file:h.csv", "is empty")
    refused(tmp_path, "file:e.csv", "is empty")


def test_empty_npz(tmp_path):
    save_npz(tmp_path / "e.npz", x=np.zeros((0, 3)), y=np.zeros(0, dtype=int))
    refused(tmp_path, "file:e.npz", "the data set is empty")


def test_one_sample(tmp_path):
    save_npz(tmp_path / "one.npz", x=np.zeros((1, 3)), y=np.zeros(1, dtype=int))
    refused(tmp_path, "file:one.npz", "only 1 sample")


def test_nan_features(tmp_path):
    x, y = tabular()
    x[3, 1] = x[5, 2] = np.nan
    save_npz(tmp_path / "n.npz", x=x, y=y)
    refused(tmp_path, "file:n.npz", "2 NaN values (first at row 3, column 1)")


def test_nan_in_csv_names_the_column(tmp_path):
    write_csv(tmp_path / "n.csv", "a,b,label\n1,2,0\n3,,1\n5,6,0\n")
    refused(tmp_path, "file:n.csv", "1 NaN value (first at row 1, column 'b')")


def test_nan_in_images_gives_the_index(tmp_path):
    x = np.zeros((4, 1, 3, 3), dtype=np.float32)
    x[2, 0, 1, 2] = np.nan
    save_npz(tmp_path / "n.npz", x=x, y=np.array([0, 1, 0, 1]))
    refused(tmp_path, "file:n.npz", "1 NaN value (first at index (2, 0, 1, 2))")


def test_values_beyond_float32(tmp_path):
    x, y = tabular()
    x[1, 2] = 1e300
    save_npz(tmp_path / "big.npz", x=x, y=y)
    refused(
        tmp_path,
        "file:big.npz",
        "1 value too large for float32 (first at row 1, column 2)",
    )


def test_infinite_features(tmp_path):
    x, y = tabular()
    x[4, 0] = np.inf
    save_npz(tmp_path / "i.npz", x=x, y=y)
    refused(tmp_path, "file:i.npz", "1 infinite value (first at row 4, column 0)")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 1, -1, 1], "must be non-negative integers 0..C-1; found -1 at row 2"),
        ([0, 1, 10**9, 1], "label 1000000000 at row 2 is out of range"),
        ([0.0, 1.5, 1.0, 0.0], "labels must be integers; found 1.5 at row 1"),
        ([0.0, np.nan, 1.0, 0.0], "1 missing or infinite values (first at row 1)"),
        (["a", "b", "a", "b"], "labels y must hold numbers"),
        ([2, 2, 2, 2], "a single class cannot be learned"),
    ],
)
def test_bad_npz_labels(tmp_path, labels, message):
    save_npz(tmp_path / "l.npz", x=RNG.normal(size=(4, 2)), y=np.array(labels))
    refused(tmp_path, "file:l.npz", message)


def test_single_class_csv(tmp_path):
    write_csv(tmp_path / "s.csv", "a,label\n1,cat\n2,cat\n")
    refused(tmp_path, "file:s.csv", "single class")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,label\n1,2,0\n3,4,1,5\n", "line 3 has 4 fields but the header has 3"),
        ("a,b,label\n1,2,0\n3,4\n", "line 3 has 2 fields but the header has 3"),
        ("a,b\n1,2,0\n3,4,1\n", "line 2 has 3 fields but the header has 2"),
        ("a,b\n0,2,0\n1,4,1\n", "line 2 has 3 fields but the header has 2"),
    ],
)
def test_ragged_csv(tmp_path, text, message):
    write_csv(tmp_path / "r.csv", text)
    refused(tmp_path, "file:r.csv", message)


def test_non_numeric_feature_column(tmp_path):
    write_csv(tmp_path / "t.csv", "a,colour,label\n1,red,0\n2,blue,1\n")
    refused(tmp_path, "file:t.csv", "feature column 'colour' is not numeric")


def test_channels_last_images(tmp_path):
    x = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    save_npz(tmp_path / "c.npz", x=x, y=np.array([0, 1, 0, 1]))
    refused(tmp_path, "file:c.npz", "looks channels-last")


def test_float_images_outside_unit_range(tmp_path):
    x = np.full((4, 1, 2, 2), 255.0, dtype=np.float32)
    save_npz(tmp_path / "c.npz", x=x, y=np.array([0, 1, 0, 1]))
    refused(tmp_path, "file:c.npz", "must lie in [0, 1]")


# --- hostile archives ---------------------------------------------------------------


class Payload:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_object_array_refused(tmp_path):
    x = np.array([[1, "a"], [2, "b"]], dtype=object)
    save_npz(tmp_path / "o.npz", x=x, y=np.array([0, 1]))
    refused(tmp_path, "file:o.npz", "holds Python objects (a pickle)")


def test_pickle_in_npz_is_never_executed(tmp_path):
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(Payload(control)))
    assert control.exists()  # the payload does run when unpickled

    marker = tmp_path / "marker"
    x = np.empty(2, dtype=object)
    x[0], x[1] = Payload(marker), Payload(marker)
    save_npz(tmp_path / "p.npz", x=x, y=np.array([0, 1]))
    assert not marker.exists()
    refused(tmp_path, "file:p.npz", "holds Python objects (a pickle)")
    assert not marker.exists()


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    stream = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def test_absurd_declared_shape_refused_before_allocation(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy_header((100_000, 100_000, 100)))
        archive.writestr("y.npy", npy_bytes(np.array([0, 1])))
    assert path.stat().st_size < 1024
    refused(tmp_path, "file:huge.npz", "declares shape (100000, 100000, 100)")


def test_zip_bomb_ratio(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_bytes(np.zeros((1024, 1024))))
        archive.writestr("y.npy", npy_bytes(np.zeros(1024, dtype=np.int64)))
    with pytest.raises(DataError, match="zip bomb"):
        check_npz(path, Limits())


def test_too_many_archive_entries(tmp_path):
    arrays = {f"a{i}": np.zeros(1) for i in range(70)}
    save_npz(tmp_path / "many.npz", x=np.zeros((2, 1)), y=np.array([0, 1]), **arrays)
    refused(tmp_path, "file:many.npz", "72 entries")


def test_not_a_zip(tmp_path):
    (tmp_path / "fake.npz").write_bytes(b"not a zip at all")
    refused(tmp_path, "file:fake.npz", "not a readable .npz archive")


def test_npz_without_labels(tmp_path):
    save_npz(tmp_path / "nol.npz", x=np.zeros((2, 2)))
    refused(tmp_path, "file:nol.npz", "has no array 'y'")


def test_unreadable_image(tmp_path):
    write_png(tmp_path / "p" / "a" / "0.png", (4, 4), "L", 0)
    (tmp_path / "p" / "b").mkdir()
    (tmp_path / "p" / "b" / "0.png").write_bytes(b"not a png")
    error = refused(tmp_path, "file:p", "image 'p/b/0.png' cannot be read")
    assert str(tmp_path) not in error.message
