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

from features.registry import money_text, number_text
from models.catalog import action_label
from models.stages import stage_label
from serving.review.caches import fmt_value
from serving.review.text import TEXT, monitor_text, term

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
TEMPLATES.env.filters["num"] = lambda v, digits=2: "–" if v is None else number_text(v, digits)
TEMPLATES.env.filters["pct"] = lambda v, digits=1: (
    "–" if v is None else f"{number_text(100 * float(v), digits)}%"
)


@jinja2.pass_context
def _money(context: Any, value: Any, digits: int = 2, signed: bool = False) -> str:
    """An amount in the page's `currency` (the policy's), which every page that shows money is given."""
    return "–" if value is None else money_text(value, context["currency"], digits=digits, signed=signed)


@jinja2.pass_context
def _feature_value(context: Any, value: Any, feature: str) -> str:
    """A feature's value in the page's language, money features (`money_features`) in its currency."""
    money = feature in context.get("money_features", ())
    return fmt_value(value, context["lang"], context["currency"] if money else None)


TEMPLATES.env.filters["money"] = _money
TEMPLATES.env.filters["fmt"] = _feature_value
TEMPLATES.env.filters["stage"] = jinja2.pass_context(lambda context, v: stage_label(str(v), context["lang"]))
TEMPLATES.env.filters["action"] = jinja2.pass_context(
    lambda context, v: action_label(str(v), context["lang"])
)
TEMPLATES.env.filters["term"] = jinja2.pass_context(lambda context, v: term(v, context["lang"]))
TEMPLATES.env.filters["said"] = jinja2.pass_context(lambda context, v: monitor_text(v, context["lang"]))


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
