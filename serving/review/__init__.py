"""The reviewer pages' parts: the overview and its cache (overview.py), the replay and waterfall caches
(caches.py), the replay comparison and value breakdown (replay.py), the page rendering (pages.py), the
sign-in's session tokens (session.py) and the words (text.py). The pages themselves are
serving/routers/review.py."""

from serving.review.caches import WATERFALL_TOP_K, ReplayModels, WaterfallCache, fmt_value
from serving.review.overview import (
    BuildCancelled,
    Overview,
    OverviewCache,
    build_overview,
    overview_inputs,
    summarise_overview,
    timelines_by_user,
)
from serving.review.pages import (
    CSP,
    STATIC_DIR,
    STATIC_URL,
    PageRefused,
    error_page,
    no_store,
    page,
    refused_page,
)
from serving.review.replay import REPLAY_TOLERANCE, breakdown, compare_replay
from serving.review.session import SESSION_COOKIE, ReviewSessions, cross_origin
from serving.review.text import TEXT, Lang

__all__ = [
    "CSP",
    "REPLAY_TOLERANCE",
    "SESSION_COOKIE",
    "STATIC_DIR",
    "STATIC_URL",
    "TEXT",
    "WATERFALL_TOP_K",
    "BuildCancelled",
    "Lang",
    "Overview",
    "OverviewCache",
    "PageRefused",
    "ReplayModels",
    "ReviewSessions",
    "WaterfallCache",
    "breakdown",
    "build_overview",
    "compare_replay",
    "cross_origin",
    "error_page",
    "fmt_value",
    "no_store",
    "overview_inputs",
    "page",
    "refused_page",
    "summarise_overview",
    "timelines_by_user",
]  # fmt: skip
