"""The submit form: from form fields to ``POST /v1/jobs`` and back to messages.

The form is turned into the JSON body the API takes and handed to the API's
own route function, so validation, the engine's checks, idempotency, metrics
and enqueueing are the same code; its 422 messages are shown by the field
they name.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import BackgroundTasks, Depends, HTTPException, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.api.routes import jobs as jobs_routes
from app.core.config import Settings
from app.db.models import Job, Tenant
from app.schemas import JobCreate
from engine.errors import EngineError
from engine.specs import AnalysisRequest

#: the most bytes a form body may have
MAX_FORM_BYTES = 64 * 1024

#: form field names, which are also the request's dotted paths
FIELDS = (
    "dataset.uri",
    "dataset.limit",
    "architecture.kind",
    "architecture.hidden_size",
    "architecture.num_layers",
    "architecture.channels",
    "architecture.kernel_size",
    "training.epochs",
    "training.batch_size",
    "training.lr",
    "training.seed",
    "analysis.method",
    "analysis.tolerance",
    "analysis.permutations",
    "budget",
    "webhook.url",
)
#: the form's labels, for the list of problems above it
LABELS = {
    "dataset.uri": "Data set reference",
    "dataset.limit": "Samples to use",
    "architecture.kind": "Architecture",
    "architecture.hidden_size": "Hidden size",
    "architecture.num_layers": "Hidden layers",
    "architecture.channels": "Channels",
    "architecture.kernel_size": "Kernel size",
    "training.epochs": "Epochs",
    "training.batch_size": "Batch size",
    "training.lr": "Learning rate",
    "training.seed": "Seed",
    "analysis.method": "Method",
    "analysis.tolerance": "Tolerance",
    "analysis.permutations": "Orderings",
    "budget": "Label budget",
    "webhook.url": "Webhook URL",
}
#: fields that only mean something for one architecture
KIND_FIELDS = {
    "mlp": ("architecture.hidden_size", "architecture.num_layers"),
    "cnn": ("architecture.channels", "architecture.kernel_size"),
    "linear": (),
}
IDEMPOTENCY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")

DATASET_CHOICES = (
    ("sklearn:digits", "scikit-learn digits (1,797 8×8 images, 10 classes)"),
    ("sklearn:iris", "scikit-learn iris (150 rows, 3 classes)"),
    ("sklearn:wine", "scikit-learn wine (178 rows, 3 classes)"),
    ("sklearn:breast_cancer", "scikit-learn breast cancer (569 rows, 2 classes)"),
    ("torchvision:MNIST", "MNIST, from the data directory"),
    ("torchvision:FashionMNIST", "Fashion-MNIST, from the data directory"),
    ("torchvision:KMNIST", "KMNIST, from the data directory"),
    ("torchvision:CIFAR10", "CIFAR-10, from the data directory"),
    ("torchvision:CIFAR100", "CIFAR-100, from the data directory"),
    ("file:", "file:PATH, a file or folder under the data directory"),
)
METHOD_CHOICES = (
    ("point", "point delta (fast, the default)"),
    ("neighbourhood", "neighbourhood (averaged around the minimum)"),
    ("hessian", "Hessian bound (low-rank)"),
    ("learning-curve", "learning curve (retrains on nested subsets)"),
)


@dataclass
class SubmitForm:
    """The form's values as typed, and the messages to show beside them."""

    values: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)
    #: messages that belong to no field of the form
    general: list[str] = field(default_factory=list)
    idempotency_key: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def advanced_has_errors(self) -> bool:
        """Whether a message belongs in the folded training and webhook part."""
        return any(name.startswith(("training.", "webhook.")) for name in self.errors)

    def add(self, path: str | None, message: str) -> None:
        name = field_for(path)
        if name is None:
            where = f"{path}: " if path else ""
            self.general.append(f"{where}{message}")
        else:
            self.errors.setdefault(name, []).append(message)


def defaults() -> dict[str, str]:
    """The form's initial values: the API's defaults, on the digits data set."""
    return values_of(
        AnalysisRequest.model_validate({"dataset": {"uri": "sklearn:digits"}})
    )


def values_of(
    request: AnalysisRequest, webhook_url: str | None = None
) -> dict[str, str]:
    """Form values that reproduce ``request`` (to run a job again with changes)."""
    body = request.model_dump(mode="json")
    values: dict[str, str] = {}
    for name in FIELDS:
        value: Any = body
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        values[name] = "" if value is None else str(value)
    values["webhook.url"] = webhook_url or ""
    return values


def values_of_job(job: Job) -> dict[str, str]:
    return values_of(AnalysisRequest.model_validate(job.request), job.webhook_url)


def parse(body: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """URL-encoded form fields: (the request's fields, the rest such as tokens)."""
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    fields = {name: value for name, value in pairs if name in FIELDS}
    other = {name: value for name, value in pairs if name not in FIELDS}
    return {name: fields.get(name, "") for name in FIELDS}, other


@dataclass
class Posted:
    """A posted form: the request's fields, and the rest (tokens, next)."""

    fields: dict[str, str]
    other: dict[str, str]


async def read_form(request: Request) -> Posted:
    """The posted form, read here so the routes can stay synchronous."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    fields, other = parse(bytes(body))
    return Posted(fields, other)


PostedDep = Annotated[Posted, Depends(read_form)]


def to_body(values: dict[str, str]) -> dict[str, Any]:
    """The JSON body of ``POST /v1/jobs``; blank fields take the API's defaults."""
    kind = values.get("architecture.kind", "").strip() or "mlp"
    kind_specific = {name for names in KIND_FIELDS.values() for name in names}
    skipped = kind_specific - set(KIND_FIELDS.get(kind, ()))
    body: dict[str, Any] = {}
    for name in FIELDS:
        text = values.get(name, "").strip()
        if not text or name in skipped:
            continue
        value: Any = text
        if name == "architecture.channels":
            value = [part.strip() for part in re.split(r"[,/ ]+", text) if part.strip()]
        target = body
        *parents, leaf = name.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return body


#: where a message about a whole part of the request is shown
GROUP_FIELDS = {
    "dataset": "dataset.uri",
    "architecture": "architecture.kind",
    "analysis": "analysis.method",
    "webhook": "webhook.url",
}


def field_for(path: str | None) -> str | None:
    """The form field a 422 location points at (``architecture.channels.1`` too)."""
    if not path:
        return None
    if path in GROUP_FIELDS:
        return GROUP_FIELDS[path]
    parts = path.split(".")
    while parts:
        name = ".".join(parts)
        if name in FIELDS:
            return name
        parts.pop()
    return None


def submit(
    form: SubmitForm,
    *,
    tenant: Tenant,
    db: Session,
    settings: Settings,
    background: BackgroundTasks,
) -> str | None:
    """Submit through the API's route; the new job's id, or None with errors set."""
    try:
        body = JobCreate.model_validate(to_body(form.values))
    except ValidationError as exc:
        for error in exc.errors():
            path = ".".join(str(part) for part in error["loc"])
            form.add(path, error["msg"])
        return None
    key = (
        form.idempotency_key
        if IDEMPOTENCY_PATTERN.match(form.idempotency_key)
        else None
    )
    try:
        job = jobs_routes.submit_job(
            body=body,
            tenant=tenant,
            session=db,
            settings=settings,
            background=background,
            idempotency_key=key,
        )
    except EngineError as exc:
        db.rollback()
        form.add(exc.field, exc.message)
        return None
    except HTTPException as exc:
        db.rollback()
        if exc.status_code != 422:
            raise
        details = exc.detail if isinstance(exc.detail, list) else [exc.detail]
        for detail in details:
            if not isinstance(detail, dict):
                form.add(None, str(detail))
                continue
            location = [str(part) for part in detail.get("loc", [])]
            if "Idempotency-Key" in location:
                form.general.append(
                    "this form was already used for another job; "
                    "the form below is fresh, submit it again"
                )
                form.idempotency_key = secrets.token_urlsafe(16)
            elif location[:1] == ["body"]:
                form.add(".".join(location[1:]), str(detail.get("msg", "")))
            else:
                form.add(None, str(detail.get("msg", "")))
        return None
    return str(job.id)
