"""The pipelines pages."""

from fastapi import APIRouter

router = APIRouter()
