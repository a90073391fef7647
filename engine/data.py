"""Loading a data set reference into memory, once, as tensors.

References (see the contract's "Dataset references"):

* ``sklearn:NAME`` with NAME one of ``digits``, ``iris``, ``wine``,
  ``breast_cancer``: the data that ships with scikit-learn (no network);
* ``torchvision:NAME`` with NAME one of ``MNIST``, ``FashionMNIST``,
  ``KMNIST``, ``CIFAR10``, ``CIFAR100``: torchvision's own classes reading
  the training split from the data directory, downloading only where allowed;
* ``file:PATH``, PATH relative to the data directory:

  - ``.npz`` with arrays ``x`` and ``y``; ``x`` is ``(m, d)`` (a table),
    ``(m, H, W)`` (grey images) or ``(m, C, H, W)`` (images, channels first);
    image pixels are ``uint8`` or floats already in ``[0, 1]``;
  - ``.csv`` (with a header row) or ``.parquet``: the label column is
    ``label_column`` or else the column named ``label``, else ``y``, else the
    last one; every other column is a numeric feature;
  - a folder in ImageFolder layout (one sub-folder of images per class, all
    images of one size), decoded as greyscale if every image is, else RGB.

Labels must be integers ``0..C-1`` (``C = max + 1``); string labels of CSV and
Parquet files are numbered in sorted order. Tables come out standardised per
column (constant columns are 0), images as float32 in ``[0, 1]`` of shape
``(m, C, H, W)``. Every problem is a :class:`~engine.errors.DataError` whose
message names it and, where possible, the fix.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.dataset import Dataset
from engine.errors import DataError
from engine.safefiles import (
    check_file_size,
    check_npz,
    check_tree,
    human_size,
    resolve_inside,
)
from engine.specs import DatasetSpec, Limits

SKLEARN_NAMES = ("digits", "iris", "wine", "breast_cancer")
TORCHVISION_NAMES = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100")
#: file suffix -> kind; a folder is the kind ``imagefolder``
FILE_KINDS = {".npz": "npz", ".csv": "csv", ".parquet": "parquet"}
#: most classes a data set may have (labels are ``0..C-1``)
MAX_CLASSES = 100_000
#: bytes one parsed CSV field may take per byte of text (a digit and a comma
#: become one float64), to bound a CSV's memory before parsing it
CSV_EXPANSION = 4

_URI = "dataset.uri"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_GREY_MODES = frozenset({"1", "L", "LA"})
_TORCHVISION_FOLDERS = {
    "CIFAR10": "cifar-10-batches-py",
    "CIFAR100": "cifar-100-python",
}


@dataclass
class _Raw:
    """A data set as read, before checks and scaling."""

    x: np.ndarray
    y: np.ndarray
    image: bool
    #: feature names of a table, for messages
    columns: list[str] | None = None
    #: the number of classes where the source knows it
    num_classes: int | None = None


def check_reference(
    spec: DatasetSpec,
    *,
    data_dir: Path,
    limits: Limits = Limits(),
    allow_download: bool = False,
) -> None:
    """Validate a reference cheaply, without loading any data.

    Checks that the scheme is known, the scikit-learn or torchvision name is
    one of the supported ones, and a ``file:`` path stays inside ``data_dir``,
    exists, is a supported kind and, for a file, is within
    ``limits.max_file_bytes``. Raises :class:`DataError` with ``field``
    set to ``dataset.uri`` or ``dataset.label_column``.
    """
    scheme, name = _split_uri(spec.uri)
    kind = scheme
    if scheme == "sklearn":
        _sklearn_name(name)
    elif scheme == "torchvision":
        _torchvision_name(name)
        if not allow_download:
            relative = _TORCHVISION_FOLDERS.get(name, f"{name}/raw")
            if not resolve_inside(data_dir, relative).is_dir():
                raise _not_found(name, relative)
    else:
        path = resolve_inside(data_dir, name)
        kind = _file_kind(path, name)
        if kind != "imagefolder":
            check_file_size(path, limits, shown=name)
    if spec.label_column is not None and kind not in ("csv", "parquet"):
        raise DataError(
            "label_column applies only to CSV and Parquet files",
            field="dataset.label_column",
        )


def load_dataset(
    spec: DatasetSpec,
    *,
    data_dir: Path,
    allow_download: bool = False,
    seed: int = 0,
    limits: Limits = Limits(),
) -> Dataset:
    """Load the data set ``spec`` refers to into memory as tensors.

    ``allow_download`` lets torchvision fetch missing files into ``data_dir``.
    With ``spec.limit`` set, that many samples are drawn without replacement,
    reproducibly for a given ``seed``. The result follows
    :class:`engine.dataset.Dataset`: float32 features (tables standardised,
    images in ``[0, 1]``) and int64 labels in ``[0, num_classes)``.
    """
    check_reference(
        spec, data_dir=data_dir, limits=limits, allow_download=allow_download
    )
    raw = _read(spec, data_dir, allow_download, limits)
    return _to_dataset(spec, raw, seed, limits)


# --- references -------------------------------------------------------------


def _split_uri(uri: str) -> tuple[str, str]:
    """Split ``scheme:rest``, refusing unknown schemes."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme not in ("sklearn", "torchvision", "file"):
        raise DataError(
            f"unknown dataset reference '{uri}'; use sklearn:NAME, "
            "torchvision:NAME or file:PATH",
            field=_URI,
        )
    return scheme, rest


def _sklearn_name(name: str) -> str:
    if name not in SKLEARN_NAMES:
        raise DataError(
            f"unknown scikit-learn data set '{name}'; use one of "
            f"{', '.join(SKLEARN_NAMES)}",
            field=_URI,
        )
    return name


def _torchvision_name(name: str) -> str:
    if name not in TORCHVISION_NAMES:
        raise DataError(
            f"unknown torchvision data set '{name}'; use one of "
            f"{', '.join(TORCHVISION_NAMES)}",
            field=_URI,
        )
    return name


def _file_kind(path: Path, shown: str) -> str:
    """The kind of data at ``path``: a known suffix or an image folder."""
    if path.is_dir():
        return "imagefolder"
    if not path.exists():
        raise DataError(
            f"no file or folder '{shown}' in the data directory", field=_URI
        )
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raise DataError(
            f"'{shown}' is a single .npy array; save features and labels together "
            "with np.savez(path, x=x, y=y)",
            field=_URI,
        )
    if suffix not in FILE_KINDS:
        raise DataError(
            f"'{shown}' is not a supported file kind; use .npz, .csv, .parquet "
            "or a folder in ImageFolder layout",
            field=_URI,
        )
    return FILE_KINDS[suffix]


def _read(spec: DatasetSpec, data_dir: Path, allow_download: bool, limits: Limits):
    """Read the referenced data as arrays, checking sizes before allocating."""
    scheme, name = _split_uri(spec.uri)
    if scheme == "sklearn":
        return _read_sklearn(name)
    if scheme == "torchvision":
        return _read_torchvision(name, data_dir, allow_download, limits)
    path = resolve_inside(data_dir, name)
    kind = _file_kind(path, name)
    if kind == "imagefolder":
        return _read_image_folder(path, name, data_dir, limits)
    if kind == "npz":
        return _read_npz(path, name, limits)
    if kind == "csv":
        frame = _read_csv(path, name, limits)
    else:
        frame = _read_parquet(path, name, limits)
    return _table(frame, spec.label_column, name)


# --- scikit-learn and torchvision --------------------------------------------


def _read_sklearn(name: str) -> _Raw:
    """One of scikit-learn's shipped tables."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    columns = [str(column) for column in bunch.get("feature_names", [])] or None
    return _Raw(x=bunch.data, y=bunch.target, image=False, columns=columns)


def _read_torchvision(
    name: str, data_dir: Path, allow_download: bool, limits: Limits
) -> _Raw:
    """The training split of a torchvision data set, as whole arrays."""
    from torchvision import datasets

    folder = resolve_inside(data_dir, _TORCHVISION_FOLDERS.get(name, f"{name}/raw"))
    if folder.is_dir():
        check_tree(folder, data_dir, limits)
    try:
        source = getattr(datasets, name)(
            root=str(data_dir), train=True, download=allow_download
        )
    except RuntimeError as error:
        relative = _TORCHVISION_FOLDERS.get(name, f"{name}/raw")
        if not allow_download:
            raise _not_found(name, relative) from error
        raise DataError(
            f"downloading torchvision:{name} into {relative} failed: {error}",
            field=_URI,
        ) from error
    except (AssertionError, TypeError, ValueError, OSError) as error:
        raise DataError(
            f"the torchvision:{name} files cannot be read: {error}",
            field=_URI,
        ) from error
    return _torchvision_arrays(source)


def _not_found(name: str, relative: str) -> DataError:
    return DataError(
        f"torchvision:{name} was not found (or is corrupted) in '{relative}' under "
        "the data directory; put its files there, or set PLATEAU_ALLOW_DOWNLOAD=true "
        "to let Plateau download them",
        field=_URI,
    )


def _torchvision_arrays(source) -> _Raw:
    """Take a torchvision data set's loaded arrays, without per-sample access."""
    data = source.data
    if isinstance(data, torch.Tensor):  # MNIST family: (m, H, W) uint8
        x = data.numpy()[:, None]
    else:  # CIFAR: (m, H, W, C) uint8
        x = np.asarray(data).transpose(0, 3, 1, 2)
    targets = source.targets
    if isinstance(targets, torch.Tensor):
        targets = targets.numpy()
    y = np.asarray(targets, dtype=np.int64)
    return _Raw(x=x, y=y, image=True, num_classes=len(source.classes))


# --- .npz ----------------------------------------------------------------------


def _read_npz(path: Path, shown: str, limits: Limits) -> _Raw:
    """Arrays ``x`` and ``y``, checked from their headers before loading."""
    headers = check_npz(path, limits)
    missing = [name for name in ("x", "y") if name not in headers]
    if missing:
        raise DataError(
            f"'{shown}' has no array {' or '.join(repr(n) for n in missing)} "
            f"(it has {sorted(headers) or 'none'}); save it with "
            "np.savez(path, x=x, y=y)",
            field=_URI,
        )
    _check_npz_layout(headers["x"].shape, headers["y"].shape)
    _check_numeric(headers["x"].dtype, "x")
    _check_numeric(headers["y"].dtype, "labels y")
    try:
        with np.load(path, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"'{shown}' cannot be read: {error}", field=_URI) from error
    image = x.ndim > 2
    if x.ndim == 3:
        x = x[:, None]
    return _Raw(x=x, y=y, image=image)


def _check_npz_layout(x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> None:
    """Accept ``x`` of ``(m, d)``, ``(m, H, W)`` or ``(m, C, H, W)``, ``y`` of
    ``(m,)``."""
    if len(x_shape) not in (2, 3, 4):
        raise DataError(
            f"x has shape {x_shape}; use (m, d) for a table, (m, H, W) or "
            "(m, C, H, W) for images",
            field=_URI,
        )
    if len(x_shape) == 4 and x_shape[3] in (1, 3, 4) and x_shape[1] not in (1, 3, 4):
        raise DataError(
            f"x has shape {x_shape}, which looks channels-last; transpose it to "
            "(m, C, H, W), e.g. x.transpose(0, 3, 1, 2)",
            field=_URI,
        )
    if len(y_shape) != 1:
        raise DataError(
            f"y has shape {y_shape}; labels must be one-dimensional, (m,)",
            field=_URI,
        )
    if x_shape[0] != y_shape[0]:
        raise DataError(
            f"x has {x_shape[0]} samples but y has {y_shape[0]} labels",
            field=_URI,
        )


def _check_numeric(dtype: np.dtype, what: str) -> None:
    if dtype.kind not in "biuf":
        raise DataError(
            f"{what} must hold numbers (bool, integer or float), not {dtype}",
            field=_URI,
        )


# --- CSV and Parquet -------------------------------------------------------------


def _read_csv(path: Path, shown: str, limits: Limits) -> pd.DataFrame:
    """A CSV file with a header row; ragged rows are refused with their line."""
    _check_table_memory(path.stat().st_size * CSV_EXPANSION, shown, limits)
    try:
        # index_col=False: never turn a first column into the index when the
        # header is short; pandas warns instead, and the warning is an error here
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, index_col=False)
    except pd.errors.EmptyDataError as error:
        raise DataError(f"'{shown}' is empty", field=_URI) from error
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        _raise_if_ragged(path, shown)
        raise DataError(f"'{shown}' is not valid CSV: {error}", field=_URI) from error
    except UnicodeDecodeError as error:
        raise DataError(f"'{shown}' is not UTF-8 text", field=_URI) from error
    if frame.isna().any(axis=None):  # pandas fills short rows with NaN
        _raise_if_ragged(path, shown)
    return frame


def check_csv_head(path: Path, shown: str, rows: int = 1000) -> int:
    """Cheap checks of a CSV's first ``rows`` lines; returns its column count.

    Refuses an empty file, a header without rows, text that is not UTF-8 and
    ragged rows among the lines read, before a job is queued; the loader
    checks the whole file again.
    """
    try:
        columns, seen = _raise_if_ragged(path, shown, max_rows=rows, errors="strict")
    except UnicodeDecodeError as error:
        raise DataError(
            f"'{shown}' is not UTF-8 text (at byte {error.start} of a line); "
            "save it as UTF-8",
            field=_URI,
        ) from error
    if columns is None:
        raise DataError(f"'{shown}' is empty", field=_URI)
    if seen < 2:
        raise DataError(f"'{shown}' has a header but no rows", field=_URI)
    return columns


def _raise_if_ragged(
    path: Path, shown: str, *, max_rows: int | None = None, errors: str = "replace"
) -> tuple[int | None, int]:
    """Raise a DataError naming the first line whose field count is off.

    Reads at most ``max_rows`` lines; returns the header's field count (None
    for a file without any) and the number of non-empty lines read.
    """
    with open(path, newline="", encoding="utf-8", errors=errors) as handle:
        reader = csv.reader(handle)
        expected, seen = None, 0
        for row in reader:
            if max_rows is not None and seen >= max_rows:
                break
            if not row:
                continue
            seen += 1
            if expected is None:
                expected = len(row)
            elif len(row) != expected:
                raise DataError(
                    f"'{shown}' has ragged rows: line {reader.line_num} has "
                    f"{len(row)} fields but the header has {expected}; every row "
                    "needs one value per column",
                    field=_URI,
                )
    return expected, seen


def _read_parquet(path: Path, shown: str, limits: Limits) -> pd.DataFrame:
    """A Parquet file, its decoded size bounded from its metadata first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        decoded = sum(
            meta.row_group(group).column(column).total_uncompressed_size
            for group in range(meta.num_row_groups)
            for column in range(meta.num_columns)
        )
        _check_table_memory(
            max(decoded, meta.num_rows * meta.num_columns * 8), shown, limits
        )
        return pd.read_parquet(path, engine="pyarrow")
    except (pa.ArrowException, OSError) as error:
        raise DataError(
            f"'{shown}' is not a readable Parquet file: {error}", field=_URI
        ) from error


def _check_table_memory(estimate: int, shown: str, limits: Limits) -> None:
    if estimate > limits.max_dataset_bytes:
        raise DataError(
            f"'{shown}' could take up to {human_size(estimate)} in memory once "
            f"parsed, over the {human_size(limits.max_dataset_bytes)} limit for "
            "a data set; split it or convert it to .npz",
            field=_URI,
        )


def _table(frame: pd.DataFrame, label_column: str | None, shown: str) -> _Raw:
    """Split a table into numeric features and labels."""
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataError(f"'{shown}' is empty: it has no data rows", field=_URI)
    names = [str(column) for column in frame.columns]
    frame = frame.set_axis(names, axis=1)
    label = _label_column(names, label_column, shown)
    features = [name for name in names if name != label]
    if not features:
        raise DataError(
            f"'{shown}' has no feature columns besides the label column '{label}'",
            field=_URI,
        )
    for name in features:
        _check_numeric_column(frame[name], name)
    x = frame[features].to_numpy(dtype=np.float32, na_value=np.nan)
    y, num_classes = _table_labels(frame[label], label)
    return _Raw(x=x, y=y, image=False, columns=features, num_classes=num_classes)


def _label_column(names: list[str], wanted: str | None, shown: str) -> str:
    """``wanted`` if given, else ``label``, else ``y``, else the last column."""
    if wanted is not None:
        if wanted not in names:
            listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise DataError(
                f"'{shown}' has no column '{wanted}'; its columns are {listed}",
                field="dataset.label_column",
            )
        return wanted
    for default in ("label", "y"):
        if default in names:
            return default
    return names[-1]


def _check_numeric_column(column: pd.Series, name: str) -> None:
    if pd.api.types.is_numeric_dtype(column.dtype):
        return
    values = column.dropna()
    example = f" (e.g. {values.iloc[0]!r})" if len(values) else ""
    raise DataError(
        f"feature column '{name}' is not numeric{example}; encode it as numbers "
        "or drop it",
        field=_URI,
    )


def _table_labels(column: pd.Series, name: str) -> tuple[np.ndarray, int | None]:
    """Numeric labels as they are; text labels numbered in sorted order."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), None
    missing = column.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"label column '{name}' has {int(missing.sum())} empty values (first "
            f"at row {int(missing.argmax())}); every sample needs a label",
            field=_URI,
        )
    classes, codes = np.unique(column.astype(str).to_numpy(), return_inverse=True)
    return codes.astype(np.int64), len(classes)


# --- ImageFolder ---------------------------------------------------------------------


def _read_image_folder(
    folder: Path, shown: str, data_dir: Path, limits: Limits
) -> _Raw:
    """Class sub-folders of images, decoded into one uint8 array."""
    from torchvision.datasets import ImageFolder

    check_tree(folder, data_dir, limits)
    try:
        listing = ImageFolder(str(folder))
    except OSError as error:  # no class folders, or a class without images
        raise DataError(
            f"'{shown}' is not in ImageFolder layout: it needs one sub-folder per "
            "class, each with at least one image (.png, .jpg, ...)",
            field=_URI,
        ) from error
    paths = [Path(path) for path, _ in listing.samples]
    height, width, mode = _image_geometry(paths, folder, shown)
    channels = 1 if mode == "L" else 3
    _check_memory(len(paths), (channels, height, width), limits, itemsize=1)
    pixels = np.empty((len(paths), height, width, channels), dtype=np.uint8)
    for index, path in enumerate(paths):
        image = _open_image(path, folder, shown)
        with image:
            pixels[index] = np.asarray(image.convert(mode)).reshape(
                height, width, channels
            )
    y = np.asarray(listing.targets, dtype=np.int64)
    x = pixels.transpose(0, 3, 1, 2)
    return _Raw(x=x, y=y, image=True, num_classes=len(listing.classes))


def _image_geometry(paths: list[Path], folder: Path, shown: str):
    """The common size of all images (read from headers) and the mode to use."""
    with _open_image(paths[0], folder, shown) as image:
        width, height = image.size
    grey = True
    for path in paths:
        with _open_image(path, folder, shown) as image:
            if image.size != (width, height):
                raise DataError(
                    f"images in '{shown}' differ in size: "
                    f"'{paths[0].relative_to(folder)}' is {width}x{height} but "
                    f"'{path.relative_to(folder)}' is "
                    f"{image.size[0]}x{image.size[1]}; all images must share "
                    "one size",
                    field=_URI,
                )
            grey = grey and image.mode in _GREY_MODES
    return height, width, "L" if grey else "RGB"


def _open_image(path: Path, folder: Path, shown: str):
    """Open an image lazily, refusing unreadable files and decompression bombs."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        name = f"{shown}/{path.relative_to(folder)}"
        reason = str(error).replace(str(path), name)  # no server paths in messages
        raise DataError(
            f"image '{name}' cannot be read: {reason}", field=_URI
        ) from error


# --- checks and conversion --------------------------------------------------------


def _to_dataset(spec: DatasetSpec, raw: _Raw, seed: int, limits: Limits) -> Dataset:
    """Check the arrays, draw the ``limit`` sample, and scale into tensors."""
    size = _check_sample_count(raw)
    y, num_classes = _label_codes(raw.y, raw.num_classes)
    _check_features(raw)
    index = _draw(size, spec.limit, seed)
    used = size if index is None else len(index)
    _check_memory(used, raw.x.shape[1:], limits, itemsize=4)
    x = raw.x if index is None else raw.x[index]
    y = y if index is None else y[index]
    features = _scale_image(x) if raw.image else _standardise(x)
    labels = torch.from_numpy(np.array(y, dtype=np.int64))
    return Dataset(spec.uri, features, labels, num_classes)


def _check_sample_count(raw: _Raw) -> int:
    size = int(raw.x.shape[0])
    if size == 0 or math.prod(raw.x.shape) == 0:
        raise DataError(
            "the data set is empty: it has no samples or no features", field=_URI
        )
    if size < 2:
        raise DataError(
            "the data set has only 1 sample; at least 2 are needed", field=_URI
        )
    if raw.y.shape != (size,):
        raise DataError(
            f"there are {size} samples but labels of shape {raw.y.shape}",
            field=_URI,
        )
    return size


def _label_codes(y: np.ndarray, known: int | None) -> tuple[np.ndarray, int]:
    """Labels as int64 in ``0..C-1`` and ``C``; every problem refused by name."""
    _check_numeric(y.dtype, "labels")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        _check_integer_like(y)
    lowest, highest = int(y.min()), int(y.max())
    if lowest < 0:
        raise DataError(
            f"labels must be non-negative integers 0..C-1; found {lowest} at row "
            f"{int(np.argmin(y))}; map the classes to 0..C-1",
            field=_URI,
        )
    bound = known if known is not None else MAX_CLASSES
    if highest >= bound:
        raise DataError(
            f"label {highest} at row {int(np.argmax(y))} is out of range: labels "
            f"must be 0..C-1 with C at most {bound}; map the classes to 0..C-1",
            field=_URI,
        )
    codes = y.astype(np.int64)
    if np.all(codes == codes[0]):
        raise DataError(
            f"every sample has label {codes[0]}: a single class cannot be learned; "
            "at least two classes are needed",
            field=_URI,
        )
    return codes, known if known is not None else highest + 1


def _check_integer_like(y: np.ndarray) -> None:
    """Refuse NaN, infinite and fractional float labels."""
    bad = ~np.isfinite(y)
    if bad.any():
        raise DataError(
            f"labels have {int(bad.sum())} missing or infinite values (first at "
            f"row {int(bad.argmax())}); every sample needs an integer label",
            field=_URI,
        )
    fractional = y != np.floor(y)
    if fractional.any():
        row = int(fractional.argmax())
        raise DataError(
            f"labels must be integers; found {y[row]:g} at row {row}",
            field=_URI,
        )


def _check_features(raw: _Raw) -> None:
    """Refuse NaN and infinite features, and badly typed or scaled images."""
    _check_numeric(raw.x.dtype, "x")
    if raw.x.dtype.kind == "f":
        _refuse_values(raw, "NaN value{s}", np.isnan(raw.x))
        _refuse_values(raw, "infinite value{s}", np.isinf(raw.x))
        too_large = np.abs(raw.x) > _FLOAT32_MAX
        _refuse_values(raw, "value{s} too large for float32", too_large)
    if raw.image:
        _check_pixels(raw.x)


def _refuse_values(raw: _Raw, what: str, mask: np.ndarray) -> None:
    """Refuse the features where ``mask`` is set, naming how many and where."""
    count = int(np.count_nonzero(mask))
    if count == 0:
        return
    where = np.unravel_index(int(mask.argmax()), mask.shape)
    if raw.columns is not None:
        place = f"row {where[0]}, column '{raw.columns[where[1]]}'"
    elif mask.ndim == 2:
        place = f"row {where[0]}, column {where[1]}"
    else:
        place = f"index {tuple(int(i) for i in where)}"
    raise DataError(
        f"the features have {count} {what.format(s='s' if count > 1 else '')} "
        f"(first at {place}); fill or drop them",
        field=_URI,
    )


def _check_pixels(x: np.ndarray) -> None:
    """Images are uint8, or floats already scaled to ``[0, 1]``."""
    if x.dtype == np.uint8:
        return
    if x.dtype.kind != "f":
        raise DataError(
            f"image pixels have dtype {x.dtype}; use uint8 (0..255) or floats in "
            "[0, 1]",
            field=_URI,
        )
    lowest, highest = float(x.min()), float(x.max())
    if lowest < 0 or highest > 1:
        raise DataError(
            f"float image pixels must lie in [0, 1] but range over "
            f"[{lowest:g}, {highest:g}]; rescale them (e.g. divide by 255)",
            field=_URI,
        )


def _draw(size: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Indices of ``limit`` samples without replacement, or None for all."""
    if limit is None or limit == size:
        return None
    if limit > size:
        raise DataError(
            f"limit is {limit} but the data set has only {size} samples",
            field="dataset.limit",
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(size, generator=generator)[:limit]
    return chosen.sort().values.numpy()


def _check_memory(
    samples: int, shape: tuple[int, ...], limits: Limits, *, itemsize: int
) -> None:
    """Refuse a data set whose arrays would exceed ``max_dataset_bytes``."""
    needed = samples * math.prod(shape) * itemsize + samples * 8
    if needed > limits.max_dataset_bytes:
        raise DataError(
            f"{samples} samples of shape {tuple(shape)} take {human_size(needed)} "
            f"in memory, over the {human_size(limits.max_dataset_bytes)} limit "
            "for a data set; set a smaller limit",
            field=_URI,
        )


def _scale_image(x: np.ndarray) -> torch.Tensor:
    """uint8 pixels divided by 255; float pixels (checked in [0, 1]) as they are."""
    tensor = torch.from_numpy(np.require(x, requirements=["C", "W"]))
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32).div_(255)
    return tensor.to(torch.float32)


def _standardise(x: np.ndarray) -> torch.Tensor:
    """Zero mean and unit variance per column; constant columns become 0."""
    tensor = torch.from_numpy(np.array(x, dtype=np.float32))
    constant = tensor.amax(dim=0) == tensor.amin(dim=0)
    mean = tensor.mean(dim=0)
    std = tensor.std(dim=0, correction=0)
    std[constant | (std == 0)] = 1.0
    tensor.sub_(mean).div_(std)
    tensor[:, constant] = 0.0
    return tensor
