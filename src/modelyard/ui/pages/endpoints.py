"""The endpoints pages."""

from modelyard.ui.routing import page_router

router = page_router()
