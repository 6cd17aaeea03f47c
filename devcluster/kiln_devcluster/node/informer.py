"""List+watch of one resource kind, resilient to watch errors, with a local cache of dicts.

A watch that ends (server timeout) resumes from the last resourceVersion; one that fails with 410
Gone or any error re-lists after a short, growing pause. Callbacks receive (event type, object dict)
and run on the informer's thread, so they must be quick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch

log = logging.getLogger(__name__)
Handler = Callable[[str, dict[str, Any]], None]


def key_of(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


class Informer:
    """Keeps ``cache`` (key -> object dict) current; calls ``handler`` on every change."""

    def __init__(self, name: str, list_fn: Callable[..., Any], to_dict: Callable[[Any], dict[str, Any]],
                 handler: Handler, stop: threading.Event, **list_kwargs: Any) -> None:
        self.name = name
        self.list_fn = list_fn
        self.to_dict = to_dict
        self.handler = handler
        self.stop = stop
        self.list_kwargs = list_kwargs
        self.cache: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)

    def start(self) -> Informer:
        self.thread.start()
        return self

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.cache.values())

    def _run(self) -> None:
        pause = 0.5
        while not self.stop.is_set():
            try:
                version = self._relist()
                pause = 0.5
                self._watch(version)
            except client.ApiException as exc:
                if exc.status != 410:
                    log.warning("%s watch failed (%s %s); re-listing in %.1fs", self.name, exc.status, exc.reason, pause)
            except Exception as exc:  # connection resets, timeouts, API server restarts
                log.warning("%s watch error %r; re-listing in %.1fs", self.name, exc, pause)
            self.stop.wait(pause)
            pause = min(pause * 2, 10.0)

    def _relist(self) -> str:
        result = self.list_fn(**self.list_kwargs)
        fresh = {key_of(d): d for d in (self.to_dict(item) for item in result.items)}
        with self.lock:
            gone = [self.cache[k] for k in self.cache.keys() - fresh.keys()]
            self.cache = fresh
        for obj in gone:
            self.handler("DELETED", obj)
        for obj in fresh.values():
            self.handler("SYNC", obj)
        self.synced.set()
        version: str = result.metadata.resource_version
        return version

    def _watch(self, version: str) -> None:
        while not self.stop.is_set():
            w = watch.Watch()
            started = time.monotonic()
            for event in w.stream(self.list_fn, resource_version=version, timeout_seconds=120,
                                  allow_watch_bookmarks=True, **self.list_kwargs):
                if self.stop.is_set():
                    w.stop()
                    return
                kind = event["type"]
                if kind == "ERROR":
                    raw = event.get("raw_object") or {}
                    raise client.ApiException(status=raw.get("code", 500), reason=raw.get("message", "watch error"))
                obj = self.to_dict(event["object"])
                version = obj["metadata"].get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                with self.lock:
                    if kind == "DELETED":
                        self.cache.pop(key_of(obj), None)
                    else:
                        self.cache[key_of(obj)] = obj
                self.handler(kind, obj)
            if time.monotonic() - started < 1:
                self.stop.wait(0.5)  # a watch that ends at once: do not spin
