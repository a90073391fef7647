"""Input shapes known without loading the data, for checks before queueing.

The class count only changes the last layer; where it is not known cheaply
the smallest possible (2) is used, so a size check here never refuses a
spec that the full check after loading would accept.
"""

from __future__ import annotations

from pathlib import Path

from engine.specs import DatasetSpec, Limits

#: (input shape, classes) of the data sets that ship with a library
KNOWN_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "sklearn:digits": ((64,), 10),
    "sklearn:iris": ((4,), 3),
    "sklearn:wine": ((13,), 3),
    "sklearn:breast_cancer": ((30,), 2),
    "torchvision:MNIST": ((1, 28, 28), 10),
    "torchvision:FashionMNIST": ((1, 28, 28), 10),
    "torchvision:KMNIST": ((1, 28, 28), 10),
    "torchvision:CIFAR10": ((3, 32, 32), 10),
    "torchvision:CIFAR100": ((3, 32, 32), 100),
}


def peek_shape(
    spec: DatasetSpec, *, data_dir: Path, limits: Limits = Limits()
) -> tuple[tuple[int, ...], int] | None:
    """``(input_shape, num_classes)`` if knowable cheaply, else None.

    Call after :func:`engine.data.check_reference` has accepted ``spec``.
    """
    if spec.uri in KNOWN_SHAPES:
        return KNOWN_SHAPES[spec.uri]
    if not spec.uri.startswith("file:"):
        return None
    from engine.safefiles import check_npz, resolve_inside

    path = resolve_inside(data_dir, spec.uri.removeprefix("file:"))
    suffix = path.suffix.lower()
    if suffix == ".npz":
        header = check_npz(path, limits).get("x")
        if header is None or len(header.shape) < 2:
            return None
        shape = header.shape[1:]
        return ((1, *shape) if len(shape) == 2 else shape), 2
    if suffix == ".csv":
        from engine.data import check_csv_head

        columns = check_csv_head(path, spec.uri.removeprefix("file:"))
        return ((max(columns - 1, 1),), 2)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        columns = len(pq.read_schema(path).names)
        return ((max(columns - 1, 1),), 2)
    return None
