"""Online feature store: round trips, atomic snapshot replacement, URLs, and bad input, on SQLite and Redis."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import sqlite3
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.online import FeatureRow, OnlineStore, RedisStore, SQLiteStore, open_store

D = dt.date
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.services)]


def _url(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    if backend == "redis":
        return request.getfixturevalue("redis_url")
    return f"sqlite:///{directory / 'online' / 'features.db'}"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[OnlineStore]:
    with open_store(store_url) as opened:
        yield opened


def expected_rows(frame: pd.DataFrame) -> dict[str, tuple[dt.date, dict[str, object]]]:
    """Each user's row with the latest cutoff, as (cutoff, values) — computed the slow, obvious way."""
    features = [name for name in frame.columns if name not in ("user_id", "cutoff")]
    latest: dict[str, tuple[dt.date, dict[str, object]]] = {}
    for record in frame.to_dict("records"):
        cutoff = pd.Timestamp(record["cutoff"]).date()
        if record["user_id"] not in latest or cutoff > latest[record["user_id"]][0]:
            values = {name: None if pd.isna(record[name]) else record[name] for name in features}
            latest[record["user_id"]] = (cutoff, values)
    return latest


def same_value(actual: object, expected: object) -> bool:
    """Equal, with floats compared bit for bit (so -0.0 ≠ 0.0)."""
    if expected is None:
        return actual is None
    if isinstance(expected, str):
        return actual == expected
    return isinstance(actual, float) and struct.pack("<d", actual) == struct.pack("<d", float(expected))


def assert_matches(row: FeatureRow | None, user_id: str, expected: tuple[dt.date, dict[str, object]]) -> None:
    assert row is not None, user_id
    cutoff, values = expected
    assert row.user_id == user_id
    assert row.cutoff == cutoff
    assert list(row.values) == list(values), "feature order must be the frame's"
    mismatched = {
        name: (row.values[name], value)
        for name, value in values.items()
        if not same_value(row.values[name], value)
    }
    assert not mismatched, f"{user_id}: (read, written) = {mismatched}"


def tricky_frame() -> pd.DataFrame:
    """Several cutoffs per user (unsorted), NaN/None, extreme floats, odd strings, mixed column kinds."""
    return pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u3", "u2", "用户-4", "u1"],
            "cutoff": [D(2025, 3, 1), D(2025, 2, 1), D(2025, 3, 1), D(2025, 1, 1), D(2025, 2, 1), D(2025, 3, 1), D(2025, 1, 1)],
            "days_since_last_purchase": [1.0, 2.0, np.nan, 5e-324, 9.0, -0.0, 7.0],
            "current_plan": ["pro", "free", None, 'quote " and \\ back', "basic", "", "free"],
            "monetary_90d": [1.7976931348623157e308, 2.2250738585072014e-308, 0.1 + 0.2, -np.inf, np.inf, 1e-300, 3.0],
            "rfm_segment": pd.Series(["champions", None, "at risk", "新客", "x", "y", None], dtype="category"),
            "orders_30d": pd.array([3, None, 1, 0, 2, 9_007_199_254_740_993 % 1000, 4], dtype="Int64"),
            "is_subscriber": [True, False, True, False, True, True, False],
            "last_action": pd.Series([None, None, None, None, None, None, None], dtype=object),
        }
    )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_write_then_read_returns_each_users_latest_row(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    frame = tricky_frame()
    with open_store(_url(backend, request, tmp_path)) as store:
        info = store.write_snapshot(frame, as_of=D(2025, 3, 1), feature_version="fv-1")
        expected = expected_rows(frame)
        assert info.n_users == len(expected) == 4
        assert info.features == {
            "days_since_last_purchase": "number",
            "current_plan": "string",
            "monetary_90d": "number",
            "rfm_segment": "string",
            "orders_30d": "number",
            "is_subscriber": "number",
            "last_action": "string",
        }
        for user_id, row in expected.items():
            read = store.read(user_id)
            assert_matches(read, user_id, row)
            assert (read.as_of, read.feature_version) == (D(2025, 3, 1), "fv-1")
        assert store.read("u1").values["days_since_last_purchase"] is None  # NaN reads as None
        assert store.read("u1").values["current_plan"] is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kinds", ["numbers only", "strings only"])
def test_frames_with_one_kind_of_feature_round_trip(
    backend: str, kinds: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    frame = tricky_frame()
    keep = ["monetary_90d", "orders_30d"] if kinds == "numbers only" else ["current_plan", "rfm_segment"]
    frame = frame[["user_id", "cutoff", *keep]]
    with open_store(_url(backend, request, tmp_path)) as store:
        store.write_snapshot(frame, as_of=D(2025, 3, 1), feature_version="fv-1")
        for user_id, row in expected_rows(frame).items():
            assert_matches(store.read(user_id), user_id, row)


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@st.composite
def feature_frames(draw: st.DrawFn) -> pd.DataFrame:
    n_numbers, n_strings = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    users = draw(st.lists(text, min_size=1, max_size=6, unique=True))
    rows = [
        (user, D(2025, 1, 1) + dt.timedelta(days=offset))
        for user in users
        for offset in draw(st.lists(st.integers(0, 60), min_size=1, max_size=3, unique=True))
    ]
    rows = draw(st.permutations(rows))
    frame = pd.DataFrame({"user_id": [user for user, _ in rows], "cutoff": [cutoff for _, cutoff in rows]})
    for index in range(n_numbers):
        frame[f"number_{index}"] = draw(
            st.lists(finite_or_not | st.none(), min_size=len(rows), max_size=len(rows))
        )
        frame[f"number_{index}"] = frame[f"number_{index}"].astype("float64")
    for index in range(n_strings):
        strings = draw(st.lists(text | st.none(), min_size=len(rows), max_size=len(rows)))
        frame.insert(2 + draw(st.integers(0, n_numbers)), f"string_{index}", pd.Series(strings, dtype=object))
    return frame


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_generated_frame_round_trips(backend: str, request: pytest.FixtureRequest) -> None:
    # One store for all examples: every example also replaces the previous example's snapshot.
    with (
        tempfile.TemporaryDirectory() as directory,
        open_store(_url(backend, request, Path(directory))) as store,
    ):

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(frame=feature_frames())
        def round_trip(frame: pd.DataFrame) -> None:
            store.write_snapshot(frame, as_of=D(2025, 3, 31), feature_version="generated")
            expected = expected_rows(frame)
            assert store.info().n_users == len(expected)
            for user_id, row in expected.items():
                assert_matches(store.read(user_id), user_id, row)
            many = store.read_many([*expected, "nobody-has-this-id"])
            assert set(many) == set(expected)
            for user_id, row in expected.items():
                assert_matches(many[user_id], user_id, row)

        round_trip()


def test_second_snapshot_replaces_the_first(store: OnlineStore) -> None:
    first = pd.DataFrame(
        {"user_id": ["old", "both"], "cutoff": [D(2025, 1, 1)] * 2, "a": [1.0, 2.0], "b": ["x", "y"]}
    )
    second = pd.DataFrame({"user_id": ["both", "new"], "cutoff": [D(2025, 2, 1)] * 2, "c": [3.0, 4.0]})
    assert store.user_ids() == []
    store.write_snapshot(first, as_of=D(2025, 1, 1), feature_version="v1")
    assert store.read("old") is not None
    assert store.user_ids() == ["both", "old"]
    store.write_snapshot(second, as_of=D(2025, 2, 1), feature_version="v2")
    assert store.user_ids() == ["both", "new"]

    assert store.read("old") is None
    assert store.read("both").values == {"c": 3.0}
    assert store.read("new").values == {"c": 4.0}
    info = store.info()
    assert (info.as_of, info.feature_version, info.n_users, info.features) == (
        D(2025, 2, 1),
        "v2",
        2,
        {"c": "number"},
    )
    assert info.written_at.tzinfo == dt.UTC
    assert abs((dt.datetime.now(dt.UTC) - info.written_at).total_seconds()) < 60


def test_another_store_on_the_same_url_sees_each_new_snapshot(store_url: str) -> None:
    frame = pd.DataFrame({"user_id": ["u"], "cutoff": [D(2025, 1, 1)], "a": [1.0]})
    with open_store(store_url) as writer, open_store(store_url) as reader:
        writer.write_snapshot(frame, as_of=D(2025, 1, 1), feature_version="v1")
        assert reader.read("u").values == {"a": 1.0}
        writer.write_snapshot(
            frame.rename(columns={"a": "b"}).assign(b=2.0), as_of=D(2025, 1, 2), feature_version="v2"
        )
        row = reader.read("u")
        assert (row.feature_version, row.values) == ("v2", {"b": 2.0})
        assert reader.info().feature_version == "v2"


def test_empty_store_and_unknown_users(store: OnlineStore) -> None:
    assert store.info() is None
    assert store.read("anyone") is None
    assert store.read_many(["anyone"]) == {}
    store.write_snapshot(tricky_frame(), as_of=D(2025, 3, 1), feature_version="v1")
    assert store.read("anyone") is None
    assert store.read("") is None


def test_read_many_returns_the_users_found(store: OnlineStore) -> None:
    frame = tricky_frame()
    store.write_snapshot(frame, as_of=D(2025, 3, 1), feature_version="v1")
    expected = expected_rows(frame)
    found = store.read_many(["u3", "missing", "u1", "u3", "用户-4"])
    assert sorted(found) == ["u1", "u3", "用户-4"]
    for user_id, row in found.items():
        assert_matches(row, user_id, expected[user_id])
    assert store.read_many([]) == {}
    many = [f"missing-{index}" for index in range(40_000)] + ["u2"]  # beyond SQLite's bound-variable limit
    assert list(store.read_many(many)) == ["u2"]
    with pytest.raises(TypeError):
        store.read_many("u1")


def _marked_frame(version: str, users: range, n_numbers: int, n_strings: int) -> pd.DataFrame:
    """Every value says which snapshot and user it belongs to; the two snapshots differ in layout."""
    marker = {"A": 1.0, "B": 2.0}[version]
    user_numbers = np.array(list(users), dtype=np.float64)
    columns: dict[str, object] = {"user_id": [f"u{index:05d}" for index in users], "cutoff": D(2025, 1, 1)}
    for index in range(n_numbers):
        columns[f"{version}_number_{index}"] = marker * 1e6 + user_numbers * 100 + index
    for index in range(n_strings):
        columns[f"{version}_string_{index}"] = [f"{version}:{user}:{index}" for user in users]
    return pd.DataFrame(columns)


def test_readers_never_see_a_mix_of_two_snapshots(store: OnlineStore) -> None:
    snapshots = {
        "A": _marked_frame("A", range(0, 2000), 20, 1),
        "B": _marked_frame("B", range(1000, 3000), 25, 2),
    }
    expected = {version: expected_rows(frame) for version, frame in snapshots.items()}
    as_of = {"A": D(2025, 1, 1), "B": D(2025, 1, 2)}
    all_users = [f"u{index:05d}" for index in range(3000)]
    in_both = set(expected["A"]) & set(expected["B"])
    problems: list[str] = []
    seen: list[str] = []
    stop = threading.Event()

    def check_row(row: FeatureRow) -> None:
        version = row.feature_version
        if version not in expected or row.as_of != as_of[version] or row.user_id not in expected[version]:
            problems.append(f"{row.user_id}: version {version}, as_of {row.as_of}")
            return
        want = expected[version][row.user_id][1]
        if row.values != want:
            problems.append(f"{row.user_id}: values of snapshot {version} differ: {row.values}")

    def reader() -> None:
        rng = random.Random(0)
        try:
            while not stop.is_set():
                user_id = rng.choice(all_users)
                row = store.read(user_id)
                if row is None:
                    if user_id in in_both:
                        problems.append(f"{user_id} is in both snapshots but read as missing")
                else:
                    check_row(row)
                    seen.append(row.feature_version)
                batch = rng.sample(all_users, 50)
                rows = store.read_many(batch)
                versions = {row.feature_version for row in rows.values()}
                if len(versions) != 1:
                    problems.append(f"read_many mixed snapshots {versions}")
                    continue
                (version,) = versions
                if set(rows) != set(batch) & set(expected[version]):
                    problems.append(f"read_many of snapshot {version} returned the wrong users")
                for row in rows.values():
                    check_row(row)
                seen.append(version)
        except Exception as exc:
            problems.append(f"reader crashed: {exc!r}")

    store.write_snapshot(snapshots["A"], as_of=as_of["A"], feature_version="A")
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for version in ["B", "A", "B", "A", "B", "A"]:
            reads_before = len(seen)
            store.write_snapshot(snapshots[version], as_of=as_of[version], feature_version=version)
            deadline = time.monotonic() + 10
            while len(seen) < reads_before + 20 and time.monotonic() < deadline and not problems:
                time.sleep(0.001)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert not problems, problems[:10]
    switches = sum(1 for before, after in itertools.pairwise(seen) if before != after)
    assert {"A", "B"} <= set(seen) and switches >= 3, f"the reader saw too few swaps ({switches})"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_write_keeps_the_previous_snapshot(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import features.online as online

    frame = tricky_frame()
    with open_store(_url(backend, request, tmp_path)) as store:
        store.write_snapshot(frame, as_of=D(2025, 3, 1), feature_version="good")
        real_chunks = online._EncodedSnapshot.chunks

        def chunks_then_crash(
            self: online._EncodedSnapshot, size: int = 1
        ) -> Iterator[tuple[list[str], list[bytes]]]:
            yield from real_chunks(self, 1)
            raise OSError("disk on fire")

        monkeypatch.setattr(online._EncodedSnapshot, "chunks", chunks_then_crash)
        with pytest.raises(OSError, match="disk on fire"):
            store.write_snapshot(frame.assign(monetary_90d=0.0), as_of=D(2025, 3, 2), feature_version="bad")
        monkeypatch.undo()

        assert store.info().feature_version == "good"
        for user_id, row in expected_rows(frame).items():
            assert_matches(store.read(user_id), user_id, row)
        if isinstance(store, RedisStore):
            keys = request.getfixturevalue("redis_keys")(store.prefix)
            assert not [key for key in keys if key.startswith(f"{store.prefix}:snap:2:")]
        else:
            assert "features_staging" not in _sqlite_tables(store.path)


def _sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_sqlite_file_is_wal_and_keeps_only_the_current_rows(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "online.db"
    with open_store(f"sqlite:///{path}") as store:
        assert isinstance(store, SQLiteStore)
        for day in (1, 2):
            store.write_snapshot(tricky_frame(), as_of=D(2025, 3, day), feature_version=f"v{day}")
        assert store._connection().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert Path(f"{path}-wal").stat().st_size == 0, (
            "the bulk load's WAL should be truncated after the swap"
        )
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM features").fetchone()[0] == 4
    assert _sqlite_tables(path) == {"snapshots", "sqlite_sequence", "current_snapshot", "features"}


def test_sqlite_url_paths_are_relative_with_three_slashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative/dir/online.db") as store:
        assert store.path.resolve() == tmp_path / "relative" / "dir" / "online.db"
    assert (tmp_path / "relative" / "dir" / "online.db").is_file()


def test_a_closed_sqlite_store_refuses_reads(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'online.db'}") as store:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        store.read("u1")


@pytest.mark.services
def test_redis_keeps_only_the_current_snapshots_keys(
    redis_url: str, redis_client: redis.Redis, redis_keys: Callable[[str], set[str]]
) -> None:
    frame = tricky_frame()
    with open_store(redis_url) as store:
        assert isinstance(store, RedisStore)
        redis_client.set(f"{store.prefix}:snap:0:u:ghost", b"left by a writer that died")
        store.write_snapshot(frame, as_of=D(2025, 3, 1), feature_version="v1")
        store.write_snapshot(frame.iloc[:3], as_of=D(2025, 3, 2), feature_version="v2")
        keys = redis_keys(store.prefix)
    users = expected_rows(frame.iloc[:3])
    p = store.prefix
    assert keys == {f"{p}:current", f"{p}:seq", f"{p}:snap:2:meta"} | {
        f"{p}:snap:2:u:{user}" for user in users
    }


@pytest.mark.services
def test_redis_prefix_defaults_to_clm(redis_url: str) -> None:
    with open_store(redis_url.partition("?")[0]) as store:
        assert store.prefix == "clm"


@pytest.mark.parametrize(
    "url",
    ["postgresql://localhost/clm", "online.db", "", "sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///x.db?mode=ro",
     "redis://127.0.0.1:6379/0?prefix=a:b", "redis://127.0.0.1:6379/0?prefix=", "redis://127.0.0.1:6379/0?prefix=a&prefix=b"],
)  # fmt: skip
def test_bad_urls_raise_value_error_naming_the_url(url: str) -> None:
    with pytest.raises(ValueError) as error:
        open_store(url)
    assert repr(url) in str(error.value)


def test_unknown_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"sqlite, redis, rediss"):
        open_store("memcached://localhost:11211")


def _frame(**changes: object) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"user_id": ["a", "b"], "cutoff": [D(2025, 1, 1)] * 2, "x": [1.0, 2.0], "plan": ["p", None]}
    )
    return frame.assign(**changes)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_frame().drop(columns="cutoff"), "lacks column"),
        (_frame().iloc[:0], "no rows"),
        (_frame(user_id=["a", "a"]), "duplicated .user_id, cutoff."),
        (_frame(user_id=["a", None]), "user_id is missing"),
        (_frame(user_id=[1, 2]), "user_id must hold strings"),
        (_frame(cutoff=[D(2025, 1, 1), None]), "cutoff is missing"),
        (_frame(cutoff=[D(2025, 1, 1), D(2025, 6, 1)]), "after the snapshot's as_of"),
        (_frame(cutoff=pd.to_datetime(["2025-01-01 10:00", "2025-01-01 00:00"])), "not times of day"),
        (_frame(when=pd.to_datetime(["2025-01-01", "2025-01-02"])), "'when' has dtype datetime64"),
        (_frame(mixed=["text", 3]), "'mixed' holds mixed"),
        (_frame(z=[1j, 2j]), "'z' is complex"),
        (_frame().rename(columns={"x": 7}), "column names must be strings"),
    ],
)
def test_bad_frames_raise_and_leave_the_snapshot_alone(
    frame: pd.DataFrame, message: str, tmp_path: Path
) -> None:
    with open_store(f"sqlite:///{tmp_path / 'online.db'}") as store:
        store.write_snapshot(_frame(), as_of=D(2025, 1, 1), feature_version="good")
        with pytest.raises(ValueError, match=message):
            store.write_snapshot(frame, as_of=D(2025, 3, 1), feature_version="bad")
        assert store.info().feature_version == "good"
        assert store.read("a").values == {"x": 1.0, "plan": "p"}


def test_bad_snapshot_arguments_raise(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'online.db'}") as store:
        with pytest.raises(TypeError, match="as_of"):
            store.write_snapshot(_frame(), as_of=dt.datetime(2025, 1, 1), feature_version="v")
        with pytest.raises(ValueError, match="feature_version"):
            store.write_snapshot(_frame(), as_of=D(2025, 1, 1), feature_version="")


def test_stored_floats_are_the_written_bits() -> None:
    # Guards same_value itself: a comparison that let -0.0 equal 0.0 would hide a lossy encoding.
    assert not same_value(0.0, -0.0)
    assert same_value(math.inf, math.inf)
    assert not same_value(None, 0.0)


@pytest.mark.parametrize(
    "bases", [[3, 12, 5], [2**40, 2**40, 3]]
)  # the fast mixed-radix key, and the fallback
def test_distinct_string_combinations_index_every_row(bases: list[int]) -> None:
    from features.online import _distinct_rows

    rng = np.random.default_rng(0)
    codes = [rng.integers(-1, min(base, 7) - 1, 500) for base in bases]
    row_index, combinations = _distinct_rows(codes, bases)
    assert len(combinations) == len({tuple(row) for row in np.stack(codes, axis=1).tolist()})
    np.testing.assert_array_equal(combinations[row_index], np.stack(codes, axis=1))
