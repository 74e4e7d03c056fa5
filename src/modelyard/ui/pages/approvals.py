"""The approvals pages."""

from fastapi import APIRouter

router = APIRouter()
