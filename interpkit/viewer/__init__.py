"""A static, offline viewer for explained datasets: ``view(stores, out)`` writes it, ``serve(out)``
serves it on localhost."""

from .serve import serve, viewer_server
from .site import concentration, write_site

view = write_site

__all__ = ["concentration", "serve", "view", "viewer_server", "write_site"]
