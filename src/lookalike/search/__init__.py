"""Search: "what looks like this?" by image bytes or by an indexed image id, with filters;
thumbnails of indexed images."""

from .service import SearchRequest, SearchService
from .thumbnails import ThumbnailService

__all__ = ["SearchRequest", "SearchService", "ThumbnailService"]
