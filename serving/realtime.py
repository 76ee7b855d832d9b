"""Placeholder: the Realtime websocket is being written."""

from fastapi import APIRouter

router = APIRouter()
