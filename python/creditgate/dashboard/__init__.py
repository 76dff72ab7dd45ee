"""creditgate's operator dashboard: an ASGI app to mount in a FastAPI/Starlette host or to serve
alone with ``creditgate dashboard`` (docs/dashboard.md). Needs ``pip install '.[dashboard]'``.

Off unless an operator token is configured (``CREDITGATE_DASHBOARD_TOKEN``), read-only unless
admin actions are switched on (``CREDITGATE_DASHBOARD_ADMIN=1``)::

    from fastapi import FastAPI
    from creditgate.dashboard import create_app

    app = FastAPI()
    app.mount("/ops", create_app(credits))   # credits: the gateway's LocalCreditManager
"""

from __future__ import annotations

from .access import DashboardConfig, DashboardConfigError, new_token
from .app import create_app

__all__ = ["DashboardConfig", "DashboardConfigError", "create_app", "new_token"]
