"""Search: "what looks like this?" by image bytes or by an indexed image id, with filters."""

from .service import SearchRequest, SearchService

__all__ = ["SearchRequest", "SearchService"]
