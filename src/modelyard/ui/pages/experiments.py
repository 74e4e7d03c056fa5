"""The experiments pages."""

from fastapi import APIRouter

router = APIRouter()
