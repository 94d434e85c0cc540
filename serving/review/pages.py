"""How a reviewer page is rendered: the autoescaped templates, the security headers every page carries, the
error page, and PageRefused (a dependency's way of answering with a page instead of the route's).

The pages' style and script are files under serving/static served by the app itself (STATIC_URL), so the
Content-Security-Policy allows no inline script or style; the figures' inline SVG carries its styles as
presentation attributes (models.plots.figure_svg), which the policy does not govern. No page may be kept by
a browser or proxy cache (`Cache-Control: no-store`): they show customer data behind a sign-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from serving.review.caches import fmt_value
from serving.review.text import TEXT

STATIC_DIR = Path(__file__).parent.parent / "static"
STATIC_URL = "/review/static"
CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"), autoescape=True
    )  # everything a user or the data supplies is escaped
)
TEMPLATES.env.filters["num"] = lambda v, digits=2: "–" if v is None else f"{float(v):,.{digits}f}"
TEMPLATES.env.filters["pct"] = lambda v, digits=1: "–" if v is None else f"{100 * float(v):.{digits}f}%"
TEMPLATES.env.filters["fmt"] = fmt_value


class PageRefused(Exception):
    """Raised by a page's dependencies: the page to show instead (sign in, forbidden, no models)."""

    def __init__(self, response: HTMLResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def refused_page(request: Request, exc: PageRefused) -> HTMLResponse:
    """The app's handler for PageRefused: the page the dependency chose."""
    return exc.response


def page(request: Request, name: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(
        request,
        name,
        {"t": TEXT[lang], "lang": lang, "path": request.url.path, **context},
        status_code=status,
    )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return no_store(response)


def no_store(response: Response) -> Response:
    """`response`, marked for no cache to keep (reviewer pages and the sign-in's answers)."""
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, lang: str, status: int, title: str, detail: str) -> HTMLResponse:
    return page(request, "error.html.j2", lang, status, title=title, detail=detail, login=status == 401)
