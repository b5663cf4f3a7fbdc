"""Per-browser sessions: each holds its own folder, opened images and runs (docs/app.md, "Safety").

A session is named by a random cookie (``secrets.token_urlsafe``); its images and runs are only
found through the session, so one browser cannot read another's files even when it guesses ids.
Idle sessions expire after ``ttl`` seconds and their folder is deleted; :meth:`SessionStore.close`
deletes every folder at shutdown.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COOKIE = "frugalvl_session"


def new_id(nbytes: int = 9) -> str:
    return secrets.token_urlsafe(nbytes)


@dataclass
class Session:
    id: str
    folder: Path
    last_seen: float
    images: dict[str, Any] = field(default_factory=dict)  # image id -> OpenedImage
    runs: dict[str, Any] = field(default_factory=dict)  # run id -> Run

    def subfolder(self, kind: str) -> Path:
        path = self.folder / kind / new_id(6)
        path.mkdir(parents=True)
        return path


class SessionStore:
    """Thread-safe map from cookie value to :class:`Session`, with expiry and cleanup."""

    def __init__(self, root: Path | None, ttl_s: float) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="frugalvl-app-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, sid: str | None) -> Session | None:
        """The live session for a cookie value, touched; None for unknown or expired ids."""
        self.expire()
        with self._lock:
            session = self._sessions.get(sid or "")
            if session is not None:
                session.last_seen = time.monotonic()
            return session

    def create(self) -> Session:
        sid = secrets.token_urlsafe(32)
        folder = self.root / new_id(12)
        folder.mkdir(parents=True)
        session = Session(sid, folder, time.monotonic())
        with self._lock:
            self._sessions[sid] = session
        return session

    def expire(self, now: float | None = None) -> list[Session]:
        """Drop sessions idle for longer than the ttl (cancelling their runs) and delete their files."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [s for s in self._sessions.values() if now - s.last_seen > self.ttl_s]
            for s in old:
                del self._sessions[s.id]
        for s in old:
            self._discard(s)
        return old

    def _discard(self, session: Session) -> None:
        for run in list(session.runs.values()):
            run.cancel()
        shutil.rmtree(session.folder, ignore_errors=True)
        log.info("session files deleted: %s", session.folder)

    def close(self) -> None:
        """Cancel every run and delete every session's files (server shutdown)."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            self._discard(s)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
