"""The reviewer pages' parts: the overview and its cache (overview.py), the replay and waterfall caches
(caches.py), the replay comparison and value breakdown (replay.py), the page rendering (pages.py) and the words (text.py). The pages
themselves are serving/routers/review.py."""

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
from serving.review.pages import COOKIE, CSP, PageRefused, error_page, page, refused_page
from serving.review.replay import REPLAY_TOLERANCE, breakdown, compare_replay
from serving.review.text import TEXT, Lang

__all__ = [
    "COOKIE",
    "CSP",
    "REPLAY_TOLERANCE",
    "TEXT",
    "WATERFALL_TOP_K",
    "BuildCancelled",
    "Lang",
    "Overview",
    "OverviewCache",
    "PageRefused",
    "ReplayModels",
    "WaterfallCache",
    "breakdown",
    "build_overview",
    "compare_replay",
    "error_page",
    "fmt_value",
    "overview_inputs",
    "page",
    "refused_page",
    "summarise_overview",
    "timelines_by_user",
]  # fmt: skip
