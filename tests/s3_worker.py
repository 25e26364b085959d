"""``dropzone run`` in a process of its own, for the scale-out tests: a Watcher on an S3 zone with
an SQS queue, writing to the store the test serves through ``s3_support.StoreManager`` (the
role MongoDB plays between real workers). Started with the ``spawn`` method, so nothing but
the arguments crosses from the test process."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any


def run_worker(
    env: dict[str, str],
    zone: str,
    s3_options: dict[str, Any],
    pipeline_options: dict[str, Any],
    store_address: Any,
    authkey: bytes,
    worker_id: str,
    ready: Any,
    stop: Any,
    hang_after_first_batch: bool = False,
) -> None:
    os.environ.update(env)
    from s3_support import SharedStore, s3_settings

    from dropzone import log
    from dropzone.models import IncomingFile
    from dropzone.pipeline.runner import Pipeline
    from dropzone.sources import open_source
    from dropzone.watcher import Watcher

    log.configure("text", "WARNING")
    settings = s3_settings(zone, s3=s3_options, **pipeline_options)
    store = SharedStore(store_address, authkey)
    source = open_source(zone, settings)

    def hang(file: IncomingFile, records: int) -> None:
        # Stands for a worker stuck or dying mid-file: its first batch is stored, its lease is
        # still renewed by the heartbeat thread, and the test kills the process from outside.
        time.sleep(3600)

    pipeline = Pipeline(
        settings, store, source, worker_id=worker_id, progress=hang if hang_after_first_batch else None
    )
    stopping = threading.Event()

    def watch_stop() -> None:
        stop.wait()
        stopping.set()

    threading.Thread(target=watch_stop, daemon=True).start()
    watcher = Watcher(pipeline, source, settings)
    source.start()
    ready.set()
    try:
        watcher.run(stopping)
    finally:
        pipeline.close()
        source.close()
        logging.shutdown()
