"""Per-browser sessions: each holds its own folder, opened images and runs (docs/app.md, "Security").

A session is named by a random cookie (``secrets.token_urlsafe``); its images and runs are only
found through the session, so one browser cannot read another's files even when it guesses ids.
Idle sessions expire after ``ttl`` seconds and their folder is deleted; :meth:`SessionStore.close`
deletes every folder at shutdown. The store holds at most ``max_sessions`` sessions (an empty one is
dropped for a new one; else :class:`TooMany`, HTTP 429), and each session at most ``max_images``
images and runs within ``max_bytes`` of memory (the oldest closed first; :class:`TooLarge`, HTTP 413,
for one image above the whole budget).
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

from ..errors import UserError

log = logging.getLogger(__name__)

COOKIE = "frugalvl_session"
ACTIVE = ("queued", "loading", "running", "writing")


class TooLarge(UserError):
    """More than the server accepts (an upload, an image): HTTP 413."""

    status = 413


class TooMany(UserError):
    """More sessions than the server keeps: HTTP 429."""

    status = 429


def new_id(nbytes: int = 9) -> str:
    return secrets.token_urlsafe(nbytes)


@dataclass
class Session:
    id: str
    folder: Path
    last_seen: float
    images: dict[str, Any] = field(default_factory=dict)  # image id -> OpenedImage, oldest first
    runs: dict[str, Any] = field(default_factory=dict)  # run id -> Run, oldest first
    max_images: int = 8
    max_bytes: int = 2 << 30
    folders: dict[str, Path] = field(default_factory=dict, repr=False)  # image id -> its upload folder
    extras: dict[str, Any] = field(default_factory=dict, repr=False)  # a feature's own state (exemplars)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def subfolder(self, kind: str) -> Path:
        path = self.folder / kind / new_id(6)
        path.mkdir(parents=True)
        return path

    @property
    def empty(self) -> bool:
        return not self.images and not self.runs

    @property
    def nbytes(self) -> int:
        """Memory held by the session's images and run results."""
        with self.lock:
            return sum(i.nbytes for i in self.images.values()) + sum(run_bytes(r) for r in self.runs.values())

    def add_image(self, image: Any, folder: Path | None = None) -> None:
        """Keep ``image``, closing the oldest images (and their runs) beyond the count and memory caps."""
        with self.lock:
            if image.nbytes > self.max_bytes:
                raise TooLarge(
                    f"{image.name} needs {image.nbytes / (1 << 20):.0f} MB, more than one session may hold here "
                    f"({self.max_bytes / (1 << 20):.0f} MB): segment it with `frugalvl segment`"
                )
            while self.images and (len(self.images) >= self.max_images or self.nbytes + image.nbytes > self.max_bytes):
                old = next((i for i in self.images if not self._busy(i)), None)
                if old is None:
                    raise TooMany("every image of this session has a run going: wait for one to finish")
                self.drop_image(old)
            self.images[image.id] = image
            if folder is not None:
                self.folders[image.id] = folder

    def add_run(self, run: Any) -> None:
        """Keep ``run``; finished runs beyond the caps are dropped, oldest first."""
        with self.lock:
            for old in list(self.runs):
                if len(self.runs) < self.max_images and self.nbytes <= self.max_bytes:
                    break
                if self.runs[old].state not in ACTIVE:
                    self.drop_run(old)
            self.runs[run.id] = run

    def _busy(self, image_id: str) -> bool:
        return any(r.image.id == image_id and r.state in ACTIVE for r in self.runs.values())

    def drop_image(self, image_id: str) -> None:
        with self.lock:
            for rid in [rid for rid, r in self.runs.items() if r.image.id == image_id]:
                self.drop_run(rid)
            self.images.pop(image_id, None)
            folder = self.folders.pop(image_id, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def drop_run(self, run_id: str) -> None:
        with self.lock:
            run = self.runs.pop(run_id, None)
        if run is not None:
            run.cancel()
            if run.state not in ACTIVE:
                shutil.rmtree(run.folder, ignore_errors=True)


def run_bytes(run: Any) -> int:
    labels = getattr(run, "labels", None)
    return (0 if labels is None else labels.nbytes) + sum(lv.data.nbytes for lv in getattr(run, "pyramid", []))


class SessionStore:
    """Thread-safe map from cookie value to :class:`Session`, with expiry and cleanup."""

    def __init__(
        self, root: Path | None, ttl_s: float, max_sessions: int = 32, max_images: int = 8, max_mb: float = 2048.0
    ) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="frugalvl-app-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.max_sessions, self.max_images, self.max_bytes = max_sessions, max_images, int(max_mb * (1 << 20))
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
        """A new session; at the cap, the longest-idle session holding nothing makes room, else TooMany."""
        self.expire()
        with self._lock:
            dropped = None
            if len(self._sessions) >= self.max_sessions:
                idle = sorted((s for s in self._sessions.values() if s.empty), key=lambda s: s.last_seen)
                if not idle:
                    raise TooMany(
                        f"this server already keeps {self.max_sessions} sessions, the most it keeps: "
                        "try again when one expires"
                    )
                dropped = self._sessions.pop(idle[0].id)
            sid = secrets.token_urlsafe(32)
            folder = self.root / new_id(12)
            session = Session(sid, folder, time.monotonic(), max_images=self.max_images, max_bytes=self.max_bytes)
            self._sessions[sid] = session
        folder.mkdir(parents=True)
        if dropped is not None:
            self._discard(dropped)
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
