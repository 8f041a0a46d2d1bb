"""The station's HTTP API (FastAPI) and the QA review page it serves."""

from cellinspect.api.app import create_app

__all__ = ["create_app"]
