"""The models pages."""

from fastapi import APIRouter

router = APIRouter()
