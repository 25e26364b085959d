"""FHIR R4 validation in a pool of processes that spreads it over the cores.

The validator is ``dropzone.validation`` (compiled from the R4 4.0.1 specification). The former
one, fhir.resources' R4B models, is kept in ``validate_fhir_resources`` as a second opinion for
tests and the benchmark.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from dropzone.errors import TransientError
from dropzone.pipeline.tuning import tune_process
from dropzone.validation import model

_PR_SET_PDEATHSIG = 1
_PARENT_CHECK_SECONDS = 1.0


T = TypeVar("T")


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
    """Tie the worker's life to the service, tune it as the service is tuned, then import the
    models once so the first batch is not slow."""
    if parent_pid is not None:
        _die_with(parent_pid)
    tune_process()  # with CPython's GC defaults digest_raws took 39 us per resource, not 29
    model()


class ValidatorCrashed(TransientError):
    """The validation pool broke under us; retry the file later."""


class Validator:
    """The pool of ``workers`` processes (0 = in this process) that parses raw records
    (``dropzone.pipeline.digest``) and rewrites and validates resources
    (``dropzone.pipeline.settle``)."""

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

    def call(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a worker (``fn`` importable by name), or here with 0 workers."""
        if self.workers == 0:
            done: Future[T] = Future()
            try:
                done.set_result(fn(*args))
            except Exception as err:  # as a pool would: the caller sees it from result()
                done.set_exception(err)
            return done
        try:
            return self._ensure_pool().submit(fn, *args)
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
