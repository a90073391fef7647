"""``plateau``: analyse a data set in-process, or run the service.

$ plateau analyze sklearn:digits --arch mlp:hidden=16,layers=3 --plot curve.png
$ plateau up          # API + worker + dashboard on embedded defaults
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    help="Plateau: have we labeled enough data yet?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Plateau: have we labeled enough data yet?"""


_ARCH_ALIASES = {
    "hidden": "hidden_size",
    "layers": "num_layers",
    "kernel": "kernel_size",
}


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2: the contract for bad input."""
    typer.echo(f"plateau: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


def parse_arch(text: str) -> dict[str, Any]:
    """An architecture from JSON or the short form ``mlp:hidden=16,layers=3``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            fail(f"--arch is not valid JSON: {exc.msg} at column {exc.colno}")
        if not isinstance(value, dict):
            fail("--arch JSON must be an object")
        return value
    kind, _, rest = text.partition(":")
    spec: dict[str, Any] = {"kind": kind}
    for pair in filter(None, rest.split(",")):
        key, sep, raw = pair.partition("=")
        if not sep:
            fail(f"--arch: '{pair}' is not key=value (e.g. mlp:hidden=16,layers=3)")
        key = _ARCH_ALIASES.get(key.strip(), key.strip())
        raw = raw.strip()
        if key == "channels":
            spec[key] = [part for part in raw.split("/") if part]
        elif raw.lower() in ("true", "false"):
            spec[key] = raw.lower() == "true"
        else:
            spec[key] = raw
    return spec


def _validation_message(error: Any) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "request"
    return f"{where}: {first['msg']}"


class _Bars:
    """One tqdm bar per stage, on stderr, driven by the engine's progress calls."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stage: str | None = None
        self.bar = None

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(
                total=100,
                desc=f"{stage:<12}",
                unit="%",
                leave=True,
                bar_format="{desc} {bar} {percentage:3.0f}% {elapsed}",
            )
        target = round(100 * min(max(fraction, 0.0), 1.0))
        self.bar.update(target - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _verdict_lines(result: Any) -> list[tuple[str, str]]:
    rows = [
        ("method", result.method),
        ("samples (m)", f"{result.sample_size:,}"),
        ("tolerance", f"{result.tolerance:g}"),
        ("final delta", f"{result.final_delta:.3g}"),
    ]
    if result.sufficient:
        rows += [
            ("verdict", "SUFFICIENT"),
            ("sufficient from (k*)", f"{result.sufficient_size:,}"),
            ("surplus", f"{result.sample_size - result.sufficient_size:,}"),
        ]
    else:
        rows.append(("verdict", "NOT YET SUFFICIENT"))
        if result.projected_size:
            low, high = result.projected_interval or (None, None)
            interval = f" [{low:,} – {high:,}]" if low and high else ""
            rows += [
                ("projected size", f"{result.projected_size:,}{interval}"),
                ("more samples needed", f"{result.additional_samples_needed:,}"),
            ]
        elif result.tail_fit and result.tail_fit.get("note"):
            rows.append(("projection", result.tail_fit["note"]))
    if result.budget:
        rows.append(("budget", f"{result.budget.limit:,}: {result.budget.status}"))
    train = result.train
    rows += [
        ("train loss / acc", f"{train.loss:.4f} / {train.accuracy:.3f}"),
        ("seconds (train)", f"{train.seconds:.2f}"),
    ]
    return rows


@app.command()
def analyze(
    dataset: Annotated[
        str, typer.Argument(help="sklearn:digits, torchvision:MNIST, file:PATH")
    ],
    arch: Annotated[
        str, typer.Option(help="mlp:hidden=16,layers=3 or a JSON object")
    ] = "mlp",
    method: Annotated[
        str, typer.Option(help="point|neighbourhood|hessian|learning-curve")
    ] = "point",
    tolerance: Annotated[
        float, typer.Option(help="delta below which the data suffice")
    ] = 1e-4,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    permutations: Annotated[int, typer.Option(help="random orderings (P)")] = 100,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    budget: Annotated[
        int | None, typer.Option(help="most labels you can afford")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="use n samples, drawn with the seed")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="label column of a CSV/Parquet")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="any other analysis setting, e.g. -o sigma=0.05 -o draws=32",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="data directory [env PLATEAU_DATA_DIR, default ./data]"),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write the Result and its curve here")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="write a PNG of the curve here")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="no progress bars")
    ] = False,
) -> None:
    """Train once, watch the loss settle as samples are added: do the data suffice?"""
    from pydantic import ValidationError

    from engine.errors import EngineError
    from engine.specs import AnalysisRequest

    extra = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--option '{item}' is not key=value")
        extra[key.strip().replace("-", "_")] = value.strip()
    try:
        request = AnalysisRequest.model_validate(
            {
                "dataset": {
                    "uri": dataset,
                    "limit": limit,
                    "label_column": label_column,
                },
                "architecture": parse_arch(arch),
                "training": {
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "lr": lr,
                    "seed": seed,
                    "device": device,
                },
                "analysis": {
                    "method": method,
                    "tolerance": tolerance,
                    "permutations": permutations,
                    **extra,
                },
                "budget": budget,
            }
        )
    except ValidationError as exc:
        fail(_validation_message(exc))

    from engine.analyze import analyze as run_analysis

    data_dir = data_dir or Path(os.environ.get("PLATEAU_DATA_DIR", "data"))
    allow = os.environ.get("PLATEAU_ALLOW_DOWNLOAD", "false").lower() in (
        "1",
        "true",
        "yes",
    )
    bars = _Bars(enabled=not quiet)
    try:
        analysis = run_analysis(
            request, data_dir=data_dir, allow_download=allow, progress=bars
        )
    except EngineError as exc:
        bars.close()
        fail(f"{exc.field}: {exc.message}" if exc.field else exc.message)
    except KeyboardInterrupt:
        bars.close()
        typer.echo("plateau: interrupted", err=True)
        raise typer.Exit(130) from None
    bars.close()

    result = analysis.result
    width = max(len(name) for name, _ in _verdict_lines(result))
    for name, value in _verdict_lines(result):
        typer.echo(f"{name:<{width}}  {value}")
    if json_path:
        document = result.model_dump(mode="json")
        document["curve"] = [p.model_dump(mode="json") for p in analysis.curve]
        _write(json_path, json.dumps(document, indent=2).encode())
        typer.echo(f"{'result':<{width}}  {json_path}")
    if plot:
        from engine.plot import plot_curve

        try:
            plot_curve(result, analysis.curve, str(plot))
        except OSError as exc:
            fail(f"--plot: cannot write {plot}: {exc.strerror}")
        typer.echo(f"{'plot':<{width}}  {plot}")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")


def _register_service_commands() -> None:
    try:
        from cli.service import register
    except ImportError:  # the service layer is optional for the engine alone
        return
    register(app)


_register_service_commands()


def main() -> None:
    """Entry point: usage errors, like bad input, are one line and exit status 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        typer.echo("plateau: interrupted", err=True)
        code = 130
    except typer.TyperException as exc:  # usage errors from the option parser
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if not text.strip():  # help was shown (no arguments): nothing to add
            pass
        elif "\n" in text.strip():
            typer.echo(text, err=True)
        else:
            typer.echo(f"plateau: error: {text}", err=True)
        code = getattr(exc, "exit_code", 2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
