"""The dashboard's ASGI app (Starlette): routes, access checks, the three forms of every page.

Every request is authenticated (bearer token or signed session cookie) before any ledger
read; every parameter is validated (``params.py``); admin POSTs additionally need admin mode
on and, for a browser session, the session's CSRF token and a same-origin ``Origin``. Ledger
calls block, so they run in Starlette's thread pool, never on the event loop.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import CreditError, IdempotencyConflict, InvalidArgument, LimitReached, LocalCreditManager, NotFound
from . import actions, charts, formats, views
from .access import COOKIE_NAME, TOKEN_MAX_CHARS, DashboardConfig, Session
from .params import FORM_BYTES_MAX, BadRequest, Params

__all__ = ["create_app"]

log = logging.getLogger("creditgate.dashboard")
Endpoint = Callable[[Request], Awaitable[Response]]
_HERE = Path(__file__).parent
_CSS = (_HERE / "dashboard.css").read_text(encoding="utf-8") + charts.CHART_CSS
_HEADERS = {
    # No script, no remote anything: the pages are HTML, one stylesheet and inline SVG.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it browsers send `Origin: null` with a form's POST, and the CSRF check
    # needs the real origin. Same-origin keeps URLs (user ids) from other sites.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_NAV = (
    ("overview", "/", "Overview"),
    ("accounts", "/accounts", "Accounts"),
    ("models", "/models", "Models"),
    ("events", "/events", "Events"),
)
_PAGES: dict[str, Callable[[LocalCreditManager, Params], views.Page]] = {
    "/": views.overview,
    "/accounts": views.accounts,
    "/account": views.account,
    "/models": views.models,
    "/events": views.events,
}


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cell"] = formats.cell
    return env


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


# Never `request.url`: Starlette builds it by decoding the raw query string as UTF-8, which raises
# on other bytes (`?q=%ff` is fine, a raw 0xff byte is not), and a hostile request must get its
# 4xx, not a 500.
def _query(request: Request) -> bytes:
    return bytes(request.scope.get("query_string", b""))


def _path(request: Request) -> str:
    return str(request.scope.get("path", ""))


class Dashboard:
    def __init__(self, manager: LocalCreditManager, config: DashboardConfig) -> None:
        self.manager, self.config, self.templates = manager, config, _templates()

    # ----- access ------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None
            operator = self.config.operator_for(token.strip())
            return Session(operator) if operator else None
        cookie = request.cookies.get(COOKIE_NAME)
        return self.config.session_from_cookie(cookie) if cookie else None

    def same_origin(self, request: Request) -> bool:
        """A browser's POST must come from a page of this host (CSRF defence in depth)."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")

    # ----- responses ---------------------------------------------------------------------------

    def html(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("session", None)
        body = self.templates.get_template(template).render(
            base=_base(request), nav=_NAV, admin=self.config.admin, **context
        )
        return HTMLResponse(body, status_code=status, headers=_HEADERS)

    def error(self, request: Request, status: int, message: str) -> Response:
        if "application/json" in request.headers.get("accept", "") or b"format=json" in _query(request):
            return Response(
                json.dumps({"error": message, "status": status}),
                status_code=status,
                media_type="application/json",
                headers=_HEADERS,
            )
        return self.html(request, "error.html", status, title=f"Error {status}", message=message)

    def unauthorised(self, request: Request) -> Response:
        if request.method == "GET" and b"format=" not in _query(request) and "authorization" not in request.headers:
            login = f"{_base(request)}/login"
            return self.html(request, "login.html", 401, title="Sign in", login=login, failed=False)
        response = self.error(request, 401, "a valid operator token is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="creditgate dashboard"'
        return response

    # ----- routes ------------------------------------------------------------------------------

    def endpoint(self, view: Callable[[LocalCreditManager, Params], views.Page]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            return await self.page(request, view)

        return endpoint

    async def page(self, request: Request, view: Callable[[LocalCreditManager, Params], views.Page]) -> Response:
        session = self.session(request)
        if session is None:
            return self.unauthorised(request)
        try:
            params = Params(request.scope.get("query_string", b""))
            form = params.choice("format", ("html", "json", "csv"))
            table = params.text("table")
            page = await run_in_threadpool(view, self.manager, params)
            if form == "json":
                if table is not None:
                    raise BadRequest("table= is only for format=csv (JSON has every table)")
                return Response(formats.page_json(page), media_type="application/json", headers=_HEADERS)
            if form == "csv":
                chosen = page.table(table) if table else page.tables[0] if len(page.tables) == 1 else None
                if chosen is None:
                    raise BadRequest(f"format=csv needs table=, one of {', '.join(t.name for t in page.tables)}")
                headers = {**_HEADERS, "Content-Disposition": f'attachment; filename="{page.name}-{chosen.name}.csv"'}
                return Response(formats.table_csv(chosen), media_type="text/csv; charset=utf-8", headers=headers)
            if table is not None:
                raise BadRequest("table= is only for format=csv")
        except BadRequest as e:
            return self.error(request, e.status, str(e))
        except CreditError as e:
            return self.ledger_error(request, e)
        query = params.query(without=("format", "table"))
        path = _path(request)[len(_base(request)) :] or "/"
        nonce = secrets.token_urlsafe(18)
        return self.html(
            request,
            f"{page.name}.html",
            title=page.title,
            page=page,
            session=session,
            query=query,
            path=path,
            nonce=nonce,
        )

    def ledger_error(self, request: Request, e: CreditError) -> Response:
        if isinstance(e, (InvalidArgument, NotFound, LimitReached)):
            return self.error(request, e.status_code, str(e))
        if isinstance(e, IdempotencyConflict):
            return self.error(request, 409, "this form was already submitted with other values: reload the page")
        log.warning("dashboard: ledger error %s on %s", e.code, _path(request))
        return self.error(request, e.status_code, f"the ledger failed ({e.code}); try again")

    async def action(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.unauthorised(request)
        if not self.config.admin:
            return self.error(request, 403, "admin actions are disabled (CREDITGATE_DASHBOARD_ADMIN)")
        try:
            form = Params(await _body(request), limit=FORM_BYTES_MAX, what="form")
            if session.csrf is not None:
                token = form.text("csrf") or ""
                # Bytes: compare_digest refuses non-ASCII str (a hostile form must get a 403, not a 500).
                valid = secrets.compare_digest(token.encode(), session.csrf.encode())
                if not self.same_origin(request):
                    message = "the form did not come from this site's own page (Origin and Host differ)"
                    return self.error(request, 403, message)
                if not valid:
                    return self.error(request, 403, "the form is stale or from another session (CSRF check failed)")
            user = await run_in_threadpool(
                actions.run, request.path_params["name"], self.manager, session.operator, form
            )
        except BadRequest as e:
            return self.error(request, e.status, str(e))
        except CreditError as e:
            return self.ledger_error(request, e)
        log.info("dashboard: %s by %s on %s", request.path_params["name"], session.operator, user)
        target = f"{_base(request)}/account?{urlencode({'user': user})}"
        return RedirectResponse(target, status_code=303, headers=_HEADERS)

    async def login_form(self, request: Request) -> Response:
        return self.html(request, "login.html", title="Sign in", login=f"{_base(request)}/login", failed=False)

    async def login(self, request: Request) -> Response:
        try:
            form = Params(await _body(request), limit=FORM_BYTES_MAX, what="form")
            token = form.text("token", max_chars=TOKEN_MAX_CHARS) or ""
            form.done()
        except BadRequest as e:
            return self.error(request, e.status, str(e))
        login = f"{_base(request)}/login"
        if not self.same_origin(request):
            # Behind a proxy: it must pass the browser's Host on (nginx: proxy_set_header Host $host).
            message = "This sign-in did not come from this site's own page (Origin and Host differ)."
            return self.html(request, "login.html", 403, title="Sign in", login=login, failed=message)
        operator = self.config.operator_for(token)
        if operator is None:
            message = "That token is not valid."
            return self.html(request, "login.html", 401, title="Sign in", login=login, failed=message)
        response = RedirectResponse(f"{_base(request)}/", status_code=303, headers=_HEADERS)
        response.set_cookie(
            COOKIE_NAME,
            self.config.issue_cookie(operator),
            max_age=self.config.session_seconds,
            path=f"{_base(request)}/",
            secure=request.scope.get("scheme") == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(f"{_base(request)}/login", status_code=303, headers=_HEADERS)
        response.delete_cookie(COOKIE_NAME, path=f"{_base(request)}/")
        return response

    async def css(self, request: Request) -> Response:
        return Response(_CSS, media_type="text/css", headers={**_HEADERS, "Cache-Control": "max-age=3600"})


async def _body(request: Request) -> bytes:
    """The request body, refused past the form limit without reading the rest."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > FORM_BYTES_MAX:
            raise BadRequest(f"the form is longer than {FORM_BYTES_MAX} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    manager: LocalCreditManager | None = None,
    *,
    config: DashboardConfig | None = None,
    database_url: str | None = None,
) -> Starlette:
    """The dashboard as an ASGI app, to mount (``app.mount("/ops", create_app(...))``) or serve.

    ``config`` defaults to ``DashboardConfig.from_env()``, which refuses to start without
    ``CREDITGATE_DASHBOARD_TOKEN``; ``manager`` defaults to ``LocalCreditManager(database_url)``.
    """
    config = config if config is not None else DashboardConfig.from_env()
    if manager is None:
        manager = LocalCreditManager(database_url) if database_url else LocalCreditManager()
    d = Dashboard(manager, config)
    routes = [Route(path, d.endpoint(view), methods=["GET", "HEAD"]) for path, view in _PAGES.items()]
    routes += [
        Route("/login", d.login_form, methods=["GET"]),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/actions/{name}", d.action, methods=["POST"]),
        Route("/static/dashboard.css", d.css, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return d.error(request, 404, "no such page")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return d.error(request, 405, "method not allowed")

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("dashboard: internal error on %s", _path(request))
        return d.error(request, 500, "internal error")

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        404: not_found,
        405: not_allowed,
        Exception: crashed,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    # No trailing-slash redirects: the pages link without them, and the redirect builds the
    # request's URL (see `_query`), which a raw non-UTF-8 query string turns into a 500.
    app.router.redirect_slashes = False
    return app
