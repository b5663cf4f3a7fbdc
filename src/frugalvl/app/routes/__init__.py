"""The app's HTTP routes, one router per resource: the page and its configuration (:mod:`.page`),
images (:mod:`.images`) and runs (:mod:`.runs`). :mod:`.common` holds what they share: the session of
a request, the objects of the server, and responses."""

from __future__ import annotations

from .change import router as change
from .images import router as images
from .page import router as page
from .runs import router as runs

ROUTERS = (page, images, runs, change)

__all__ = ["ROUTERS"]
