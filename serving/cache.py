"""Decide once per (feature snapshot, model versions, policy version). Everything in a stored user's decision
depends on those alone — stage, scores and bands, explanations in both languages, value terms, every
candidate — except the decision id and the contacts made since the snapshot. So the whole snapshot is
decided in bulk, off the request path, through the one population decision (`DecisionModels.decide`) and
one TreeSHAP pass per model, and every decision is kept encoded: the JSON body split around its decision
id. A request then reads its entry, checks the decision log for contacts since the snapshot and writes
bytes. A user contacted since the snapshot is decided again, in full, with the contact features those
contacts imply (memoised per contact state, so a steady state costs one dictionary lookup).

A snapshot larger than `max_users` is not built in bulk: its entries are filled lazily, one full decision
per user and language, into an LRU bounded at `max_users`."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from features.contacts import contacts_column, days_since_column, negative_outcomes_column
from features.online import OnlineStore
from models.arbitration import CONTACTS_IN_WINDOW, DAYS_SINCE_LAST_CONTACT, LAST_ACTION
from models.catalog import CONTACT_WINDOW_DAYS, NO_ACTION, contact_windows
from models.explain import population_contributions
from models.population import lapsed
from serving.scorer import Decided, Scorer, contact_columns
from serving.state import ModelSet
from serving.ticker import Ticker

log = logging.getLogger(__name__)

LANGS = ("en", "zh")
PLACEHOLDER = "0" * 32  # a decision id's length (uuid4 hex); the body is split around it
SNAPSHOT_KEY = b',"snapshot":'  # the body's last field, replaced by the snapshot's age on the day served
CHUNK_USERS = 20_000  # users decided per bulk step: bounds the build's transient memory
CONTACT_STATES_KEPT = 100_000  # decisions re-made for contacted users, kept per (user, lang, contact state)


class Codec:
    """zlib with a preset dictionary of typical bodies: an encoded decision is about 8 kB of JSON, 0.7 kB
    this way (a plain zlib stream needs the repeated keys once per body, the dictionary holds them once).
    Without a dictionary the bytes are kept as they are (the lazy LRU, which holds few)."""

    def __init__(self, zdict: bytes | None) -> None:
        self.zdict = zdict

    @classmethod
    def trained(cls, samples: Sequence[bytes]) -> Codec:
        return cls(b"".join(samples)[-32_768:])  # zlib's window: the last 32 kB of the samples count

    def pack(self, data: bytes) -> bytes:
        if self.zdict is None:
            return data
        packer = zlib.compressobj(6, zdict=self.zdict)
        return packer.compress(data) + packer.flush()

    def unpack(self, data: bytes) -> bytes:
        if self.zdict is None:
            return data
        unpacker = zlib.decompressobj(zdict=self.zdict)
        return unpacker.decompress(data) + unpacker.flush()


@dataclass(frozen=True, slots=True)
class Entry:
    """One user's decision in one language, encoded (`packed` by the cache's codec): the response body with
    `PLACEHOLDER` at `id_at` for the decision id, the span of its alternatives (what the decision log keeps
    as `candidates`), where its `snapshot` (the last field: its age changes with the day) starts, the inputs,
    and the fields the log and the metrics keep beside it."""

    packed: bytes
    id_at: int
    snapshot_at: int
    alternatives: tuple[int, int]
    inputs: bytes  # packed; one object shared by a user's entries
    stage: str
    action: str
    propensity: float
    explored: bool
    expected_value: float
    churn: float

    def nbytes(self) -> int:
        return len(self.packed)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An entry unpacked for one request."""

    body: bytes
    candidates: bytes
    inputs: bytes


def encode(decided: Decided, codec: Codec, inputs: bytes | None = None) -> Entry:
    """A decision made with `PLACEHOLDER` as its id, encoded once (`inputs`: the user's packed inputs when
    another language's entry has them already)."""
    decision = decided.decision
    body = decision.__pydantic_serializer__.to_json(decision)
    id_at = body.index(b'"decision_id":"' + PLACEHOLDER.encode()) + len(b'"decision_id":"')
    start = body.index(b',"alternatives":') + len(b',"alternatives":')
    end = body.index(b',"explanations":', start)
    if inputs is None:
        inputs = codec.pack(orjson.dumps(decided.inputs, option=orjson.OPT_NON_STR_KEYS))
    return Entry(
        packed=codec.pack(body), id_at=id_at, snapshot_at=body.rindex(SNAPSHOT_KEY), alternatives=(start, end),
        inputs=inputs,
        stage=decision.stage.name, action=decision.action.name, propensity=decided.propensity,
        explored=decided.explored, expected_value=decision.action.expected_value,
        churn=decision.churn.probability,
    )  # fmt: skip


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def decide_rows(
    scorer: Scorer,
    models: ModelSet,
    user_ids: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    as_of: dt.date | None,
    explore: bool,
    langs: Sequence[str] = LANGS,
    decision_id: str = PLACEHOLDER,
) -> Iterator[tuple[int, str, Decided]]:
    """(index, lang, Decided) of every row, vectorised: the one population decision, one TreeSHAP pass per
    model, then the one assembly the request path uses (`Scorer.assemble`). What `clm score` and the cache
    both decide through."""
    policy = models.policy
    names = policy.feature_names
    known = [{name: row.get(name) for name in names} for row in rows]
    frame = pd.DataFrame(known, columns=list(names)).assign(user_id=list(user_ids))
    carried = [column for column in contact_columns(policy) if any(column in row for row in rows)]
    if carried:  # the per-action contact state, where the rows carry it
        state = pd.DataFrame(
            [[row.get(column) for column in carried] for row in rows], columns=carried, dtype=float
        )
        frame = pd.concat([frame, state], axis=1)
    if as_of is not None:
        frame["cutoff"] = pd.Series([as_of] * len(frame), dtype=object)  # str(as_of): the request's draw key
    decisions = models.decide(frame, explore=explore).decisions
    assert decisions is not None
    columns = decisions.columns()
    gone = lapsed(frame, models.churn.horizon_days)
    explained = population_contributions(frame, models, decisions, scorer.top_k, num_threads=1)
    position = {target: part.position() for target, part in explained.items()}
    for i, user_id in enumerate(user_ids):
        missing = [name for name, value in known[i].items() if value is None]
        inputs = known[i]
        if carried:  # the contact state the decision read is part of its inputs
            inputs = {**inputs, **{c: rows[i][c] for c in carried if rows[i].get(c) is not None}}
        for lang in langs:
            explanations = {}
            for target, part in explained.items():
                k = position[target].get(i)
                if k is not None:
                    explanations[target] = scorer.explanation(part.values[k], part.order[k], part.bundle, known[i],
                                                              models, lang)  # fmt: skip
            yield i, lang, scorer.assemble(
                models, decisions, columns, i, explanations=explanations, gone=bool(gone[i]), missing=missing,
                known=inputs, user_id=user_id, as_of=as_of, lang=lang, decision_id=decision_id,
            )  # fmt: skip


def _plus(value: Any, added: int) -> float:
    """A stored count (None or NaN: 0) plus what was logged since."""
    return float(np.nan_to_num(value if value is not None else 0.0)) + added


@dataclass(frozen=True)
class Contacts:
    """What a user's decisions and outcomes logged since the snapshot change in the snapshot's contact state:
    the contact features (last action, days since the last contact, contacts in 30 days) and the per-action
    contact state (features.contacts: days since each action, its contacts per window, its negative outcomes).
    Hashable: the decision made with it is memoised per state."""

    last_action: str | None  # None: no contact since the snapshot (only outcomes recorded)
    days_since_last_contact: float  # of the last contact since the snapshot (0 and unused without one)
    added_30d: int
    # (action, days since it was last sent) for every action logged since the snapshot: each cooldown exact,
    # not only the last action's
    days_since_action: tuple[tuple[str, float], ...] = ()
    # (action, window in days, its contacts logged since the snapshot within the window)
    added_in_window: tuple[tuple[str, int, int], ...] = ()
    # (action, negative outcomes of it recorded since the snapshot: POST /v1/outcomes)
    negative_outcomes: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_log(
        cls,
        logged: Sequence[tuple[dt.datetime, str]],
        now: dt.datetime,
        *,
        outcomes: Sequence[tuple[str, str]] = (),
        windows: Sequence[int] = (CONTACT_WINDOW_DAYS,),
        negative_names: Mapping[str, Any] | None = None,
    ) -> Contacts | None:
        """`logged`: (ts, action) newest first; `outcomes`: (action taken, outcome) recorded against the user's
        decisions since the snapshot, counted as negative where `negative_names[action]` holds the outcome;
        `windows`: the per-action count windows. None when nothing logged changes the state."""
        contacts = [(ts, action) for ts, action in logged if action != NO_ACTION]
        negative: dict[str, int] = {}
        for action, outcome in outcomes:
            if negative_names is not None and outcome in negative_names.get(action, ()):
                negative[action] = negative.get(action, 0) + 1
        if not contacts and not negative:
            return None
        newest: dict[str, dt.datetime] = {}
        for ts, action in contacts:  # newest first: the first seen of each action is its latest
            newest.setdefault(action, ts)
        added = []
        for action in sorted(newest):
            for w in sorted({*windows, CONTACT_WINDOW_DAYS}):
                start = now - dt.timedelta(days=w)
                count = sum(ts >= start for ts, a in contacts if a == action)
                if count:
                    added.append((action, w, count))
        window = now - dt.timedelta(days=CONTACT_WINDOW_DAYS)
        latest = contacts[0] if contacts else None
        return cls(
            last_action=None if latest is None else latest[1],
            days_since_last_contact=0.0
            if latest is None
            else float(max(0, (now.date() - latest[0].date()).days)),
            added_30d=sum(ts >= window for ts, _ in contacts),
            days_since_action=tuple(
                sorted((a, float(max(0, (now.date() - ts.date()).days))) for a, ts in newest.items())
            ),
            added_in_window=tuple(added),
            negative_outcomes=tuple(sorted(negative.items())),
        )

    @classmethod
    def since_snapshot(
        cls, policy: Any, logged: Sequence[tuple[dt.datetime, str]], outcomes: Sequence[tuple[str, str]],
        now: dt.datetime,
    ) -> Contacts | None:  # fmt: skip
        """`from_log` with the policy's count windows and its negative outcome names per action."""
        if not logged and not outcomes:
            return None
        names = {action.name: policy.contact.negative_outcome_names(action) for action in policy.catalog}
        return cls.from_log(logged, now, outcomes=outcomes, windows=contact_windows(policy.contact, policy.catalog),
                            negative_names=names)  # fmt: skip

    def applied(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(values)
        if self.last_action is not None:
            before = values.get(
                LAST_ACTION
            )  # the snapshot's last action keeps its cooldown after a later contact
            if isinstance(before, str) and before != NO_ACTION and before not in dict(self.days_since_action):
                # as of the snapshot: short by the days since it, so its cooldown is never cut short
                out.setdefault(days_since_column(before), values.get(DAYS_SINCE_LAST_CONTACT))
            out[LAST_ACTION] = self.last_action
            out[DAYS_SINCE_LAST_CONTACT] = self.days_since_last_contact
            out[CONTACTS_IN_WINDOW] = _plus(out.get(CONTACTS_IN_WINDOW), self.added_30d)
        for action, days in self.days_since_action:
            out[days_since_column(action)] = days
        for action, w, count in self.added_in_window:
            out[contacts_column(action, w)] = _plus(out.get(contacts_column(action, w)), count)
        for action, count in self.negative_outcomes:
            out[negative_outcomes_column(action)] = _plus(out.get(negative_outcomes_column(action)), count)
        return out


@dataclass
class DecisionCache:
    """Every stored user's decision for one model set and one snapshot (or, past `max_users`, an LRU of
    them filled on demand). `since`: contacts logged from then on change a decision."""

    models: ModelSet
    snapshot_id: int
    as_of: dt.date
    explore: bool
    bulk: bool
    max_users: int
    codec: Codec = field(default_factory=lambda: Codec(None))
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    built_seconds: float = 0.0
    _lru: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    after_contact: dict[tuple[str, str, Contacts], Entry] = field(default_factory=dict)  # built in bulk
    _contacted: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def since(self) -> dt.datetime:
        return dt.datetime.combine(self.as_of, dt.time.min, dt.UTC)

    def users(self) -> int:
        return len(self.entries) // len(LANGS) if self.bulk else len(self._lru)

    def nbytes(self) -> int:
        """The encoded bytes the entries hold (the bodies, candidates and inputs)."""
        return sum(entry.nbytes() for entry in (self.entries if self.bulk else self._lru).values())

    def unpack(self, entry: Entry, decision_id: str, snapshot: bytes | None = None) -> Encoded:
        """The entry's response body with `decision_id` in place and, when given, `snapshot` (the JSON of the
        snapshot's age today) for the one it was built with; its candidates and its inputs."""
        body = self.codec.unpack(entry.packed)
        if snapshot is not None:
            body = body[: entry.snapshot_at] + SNAPSHOT_KEY + snapshot + b"}"
        start, end = entry.alternatives
        return Encoded(
            body[: entry.id_at] + decision_id.encode() + body[entry.id_at + len(PLACEHOLDER) :],
            body[start:end],
            self.codec.unpack(entry.inputs),
        )

    def entry(self, user_id: str, lang: str, scorer: Scorer, store: OnlineStore) -> Entry | None:
        """The user's entry; None when the user has no row in this snapshot (or, for the lazy LRU, when the
        store holds a newer snapshot than this cache: the caller decides in full until the refresh)."""
        if self.bulk:
            return self.entries.get((user_id, lang))
        key = (user_id, lang)
        with self._lock:
            found = self._lru.get(key)
            if found is not None:
                self._lru.move_to_end(key)
                return found
        row = store.read(user_id)
        if row is None or row.as_of != self.as_of:
            return None
        found = self.decide_one(scorer, user_id, row.values, lang)
        with self._lock:
            self._lru[key] = found
            while len(self._lru) > self.max_users:
                self._lru.popitem(last=False)
        return found

    def decide_one(self, scorer: Scorer, user_id: str, values: Mapping[str, Any], lang: str) -> Entry:
        decided = scorer.decide(self.models, values, user_id=user_id, as_of=self.as_of, lang=lang,
                                explore=self.explore)  # fmt: skip
        decided.decision.decision_id = PLACEHOLDER
        return encode(decided, self.codec)

    def contacted(self, user_id: str, lang: str, contacts: Contacts, scorer: Scorer, entry: Entry) -> Entry:
        """The user's decision with the contacts since the snapshot applied (memoised per contact state): the
        full decision over the entry's own inputs (this snapshot's, even when the store has a newer one)."""
        key = (user_id, lang, contacts)
        found = self.after_contact.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._contacted.get(key)
            if found is not None:
                self._contacted.move_to_end(key)
                return found
        values = contacts.applied(orjson.loads(self.codec.unpack(entry.inputs)))
        found = self.decide_one(scorer, user_id, values, lang)
        with self._lock:
            self._contacted[key] = found
            while len(self._contacted) > CONTACT_STATES_KEPT:
                self._contacted.popitem(last=False)
        return found


def build_cache(
    models: ModelSet, scorer: Scorer, store: OnlineStore, *, explore: bool, max_users: int
) -> DecisionCache | None:
    """The cache of `models` over the store's current snapshot (None when the store has none): every user
    in bulk, or an empty LRU when the snapshot holds more than `max_users` users."""
    info = store.info()
    if info is None:
        return None
    started = time.perf_counter()
    bulk = info.n_users <= max_users
    cache = DecisionCache(models, info.snapshot_id, info.as_of, explore, bulk, max_users)
    if bulk:
        user_ids = store.user_ids()
        for part in chunks(user_ids, CHUNK_USERS):
            rows = store.read_many(part)
            present = [u for u in part if u in rows and rows[u].as_of == info.as_of]
            values = [rows[u].values for u in present]
            decided = decide_rows(scorer, models, present, values, as_of=info.as_of, explore=explore)
            if cache.codec.zdict is None:  # the dictionary: the first users' bodies in every language
                first = [next(decided) for _ in range(min(len(present), 8) * len(LANGS))]
                cache.codec = Codec.trained([d.decision.__pydantic_serializer__.to_json(d.decision)
                                             for _, _, d in first])  # fmt: skip
                decided = itertools.chain(first, decided)
            inputs: bytes | None = None
            for i, lang, one in decided:
                entry = encode(one, cache.codec, inputs if lang != LANGS[0] else None)
                inputs = entry.inputs
                cache.entries[(present[i], lang)] = entry
            # The decision after the one this snapshot makes, for the users it contacts: the same day, that
            # action logged once more (what a repeated request meets), decided in bulk too.
            contacted = [(u, v) for u, v in zip(present, values, strict=True)
                         if cache.entries[(u, LANGS[0])].action != NO_ACTION]  # fmt: skip
            now = dt.datetime.now(dt.UTC)  # what a request the same day after the contact finds logged
            states = [Contacts.since_snapshot(models.policy, [(now, cache.entries[(u, LANGS[0])].action)], (), now)
                      for u, _ in contacted]  # fmt: skip
            after = decide_rows(scorer, models, [u for u, _ in contacted],
                                [state.applied(v) for state, (_, v) in zip(states, contacted, strict=True)],
                                as_of=info.as_of, explore=explore)  # fmt: skip
            inputs = None
            for i, lang, one in after:
                entry = encode(one, cache.codec, inputs if lang != LANGS[0] else None)
                inputs = entry.inputs
                cache.after_contact[(contacted[i][0], lang, states[i])] = entry
    cache.built_seconds = time.perf_counter() - started
    log.info(
        "decision cache for %s over snapshot %s (%s): %d users in %.1f s%s", models.version_labels(),
        info.snapshot_id, info.as_of, cache.users(), cache.built_seconds, "" if bulk else " (lazy LRU)",
    )  # fmt: skip
    return cache


class DecisionCaches:
    """The caches of the model sets that serve (current and shadow), each over the store's snapshot. A set
    gets its cache in `prepare` — the model holder's warm step, before the set is swapped in, so no request
    sees it without one; a new snapshot is noticed by `refresh` (a timer thread) and its caches are built
    while the old ones keep serving, then swapped."""

    def __init__(self, scorer: Scorer, *, explore: bool, max_users: int) -> None:
        self.scorer, self.explore, self.max_users = scorer, explore, max_users
        self.store: OnlineStore | None = None
        self._caches: dict[int, DecisionCache] = {}
        self._lock = threading.Lock()
        self._ticker: Ticker | None = None

    def get(self, models: ModelSet) -> DecisionCache | None:
        cache = self._caches.get(id(models))
        return cache if cache is not None and cache.models is models else None

    def prepare(self, models: ModelSet) -> DecisionCache | None:
        if self.store is None:
            return None
        cache = build_cache(models, self.scorer, self.store, explore=self.explore, max_users=self.max_users)
        if cache is not None:
            with self._lock:
                self._caches[id(models)] = cache
        return cache

    def refresh(self, serving: Sequence[ModelSet | None]) -> bool:
        """Rebuild the caches of the `serving` sets whose snapshot is no longer the store's, and drop the
        caches of sets no longer serving. True when something was rebuilt."""
        if self.store is None:
            return False
        info = self.store.info()
        live = {id(models): models for models in serving if models is not None}
        rebuilt = False
        for models in live.values():
            cache = self.get(models)
            if info is not None and (cache is None or cache.snapshot_id != info.snapshot_id):
                rebuilt = self.prepare(models) is not None or rebuilt
        with self._lock:
            for key in [k for k in self._caches if k not in live]:
                del self._caches[key]
        return rebuilt

    def start(self, serving: Any, interval_seconds: float) -> None:
        """Check the store's snapshot every `interval_seconds` (`serving()` gives the sets serving now); a
        failed refresh leaves the old caches serving until the next tick."""
        self._ticker = Ticker("clm-decision-cache", lambda: self.refresh(serving()), "decision cache refresh")
        self._ticker.start(interval_seconds)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
