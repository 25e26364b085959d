"""FHIR validation with fhir.resources, and the process pool that spreads it over the cores.

Which models: fhir.resources 8.x ships R5 (default), R4B and STU3, but no R4 package. The samples
and our partners send R4 (4.0.1). R5 rejects common R4 content (9 of the 13 resource types in the
Synthea samples), while R4B (4.3) is a technical correction of R4 that keeps every R4 resource used
for clinical and claims data with the same shape. Known R4 -> R4B differences we do not hide:
the R4 medicinal-product family (MedicinalProduct*, SubstanceSpecification) and the evidence
synthesis resources were replaced in R4B, so such resources are rejected as unknown types.

Error messages are rebuilt from pydantic's structured errors without ``input`` and then scrubbed
of any string that occurs in the resource, because validator messages may quote the input.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson
from pydantic import ValidationError

from dropzone.errors import TransientError
from processors.base import Issue

_REDACTED = "[value]"
_PR_SET_PDEATHSIG = 1
_PARENT_CHECK_SECONDS = 1.0


@functools.lru_cache(maxsize=256)
def _model(rtype: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def validate_resource(resource: dict[str, Any]) -> list[Issue]:
    rtype = resource.get("resourceType")
    model = _model(rtype) if isinstance(rtype, str) else None
    if model is None:
        return [
            Issue(
                "unknown_resource_type", "not a FHIR R4 resource type known to the validator", "resourceType"
            )
        ]
    try:
        model.model_validate(resource)
    except ValidationError as err:
        return _issues_from(err, rtype, resource)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        # fhir.resources raises KeyError for a contained resource of an unknown type.
        return [Issue("invalid_resource", _scrub(f"{err.__class__.__name__}", resource), rtype)]
    return []


def _issues_from(err: ValidationError, rtype: str, resource: dict[str, Any]) -> list[Issue]:
    issues = []
    for item in err.errors(include_input=False, include_url=False, include_context=False):
        path = rtype
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        issues.append(Issue(f"invalid.{item['type']}", _scrub(item["msg"], resource), path))
    return issues


def _scrub(message: str, resource: dict[str, Any]) -> str:
    """Replace any string value of the resource that appears in ``message`` (longest first)."""
    values = sorted({v for v in _strings(resource) if len(v) >= 2}, key=len, reverse=True)
    for value in values:
        if value in message:
            message = message.replace(value, _REDACTED)
    return message


def _strings(node: Any) -> Iterator[str]:
    """Every string (and number, as text) in the resource; iterative, so depth cannot overflow."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            yield str(item)


def validate_blob(blob: bytes) -> list[tuple[int, list[tuple[str, str, str | None]]]]:
    """Pool entry point: an orjson array of resources -> (position, issues) for failures only.
    Bytes in and tuples out keep pickling cheap."""
    failures = []
    for pos, resource in enumerate(orjson.loads(blob)):
        issues = validate_resource(resource)
        if issues:
            failures.append((pos, [(i.code, i.message, i.path) for i in issues]))
    return failures


def _die_with(parent_pid: int) -> None:
    """Make this pool worker end when the service process ends, however it ends (SIGKILL too).

    The worker's own parent is the forkserver, so the kernel's parent-death signal alone is not
    enough: a daemon thread also watches the service's pid and exits when it is gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the thread below still does it

    def watch() -> None:
        while True:
            time.sleep(_PARENT_CHECK_SECONDS)
            if os.getppid() == 1 or not _alive(parent_pid):
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _warm_up(parent_pid: int | None = None) -> None:
    """Tie the worker's life to the service, then import the models once so the first batch is
    not slow."""
    if parent_pid is not None:
        _die_with(parent_pid)
    for rtype in ("Patient", "Observation", "Encounter", "Condition", "ExplanationOfBenefit", "Coverage"):
        _model(rtype)


class ValidatorCrashed(TransientError):
    """The validation pool broke under us; retry the file later."""


class Validator:
    """Validates batches in ``workers`` processes (0 = in this process)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: the service has threads (watcher, lease heartbeat), and forking a
            # threaded process can copy a held lock into the child.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_warm_up, initargs=(os.getpid(),)
            )
        return self._pool

    def submit(
        self, resources: list[dict[str, Any]]
    ) -> Future[list[tuple[int, list[tuple[str, str, str | None]]]]]:
        blob = orjson.dumps(resources)
        if self.workers == 0:
            done: Future[Any] = Future()
            done.set_result(validate_blob(blob))
            return done
        try:
            return self._ensure_pool().submit(validate_blob, blob)
        except BrokenProcessPool as err:
            self.reset()
            raise ValidatorCrashed("a validation worker died; the file will be retried") from err

    def result(self, future: Future[Any]) -> Any:
        try:
            return future.result()
        except BrokenProcessPool as err:
            # A worker killed (out of memory, signal): not the file's fault. Start a fresh pool
            # and leave the file in incoming/ for the next attempt.
            self.reset()
            raise ValidatorCrashed("a validation worker died; the file will be retried") from err

    def reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
