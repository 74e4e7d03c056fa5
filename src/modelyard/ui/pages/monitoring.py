"""The monitoring pages."""

from fastapi import APIRouter

router = APIRouter()
