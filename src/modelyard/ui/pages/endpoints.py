"""The endpoints pages."""

from fastapi import APIRouter

router = APIRouter()
