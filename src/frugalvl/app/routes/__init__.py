"""The app's HTTP routes, one router per resource: the page and its configuration (:mod:`.page`),
images (:mod:`.images`), runs (:mod:`.runs`), change between two dates (:mod:`.change`), remote
sources read into images (:mod:`.sources`) and the exemplars drawn on an image (:mod:`.exemplars`).
:mod:`.common` holds what they share: the session of a request, the objects of the server, and responses."""

from __future__ import annotations

from .change import router as change
from .exemplars import router as exemplars
from .images import router as images
from .page import router as page
from .runs import router as runs
from .sources import router as sources

ROUTERS = (page, images, runs, change, sources, exemplars)

__all__ = ["ROUTERS"]
