"""A search engine for argilla-server 2.8 that reads the server's own SQL database.

argilla-server needs Elasticsearch or OpenSearch, and neither can be installed here (no registry
reachable from these machines ships one). The server picks its engine by the name registered with
`SearchEngine.register` and `ARGILLA_SEARCH_ENGINE`, so registering this class before the app
imports runs the real server, SDK and web UI unchanged.

The SQL tables are the index: the indexing hooks do nothing (there is no second copy to drift), and
`search`, progress, metrics and similarity queries read the records, responses, suggestions and
vectors tables. Departures from an Elasticsearch-backed server: text search is a case-insensitive
"all words appear" match rather than BM25; every query is O(records in the dataset); an annotator's
queue is ordered by a hash of (user, record) where Elasticsearch uses a seeded random score. Meant
for laptops, demos and tests; run Argilla with Elasticsearch in production (annotation/deploy/).

This file is imported by the server's own virtual environment: it must import nothing from align.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from argilla_server.enums import MetadataPropertyType, SimilarityOrder, SortOrder
from argilla_server.models import (
    Dataset,
    MetadataProperty,
    Question,
    Record,
    Response,
    Suggestion,
    User,
    Vector,
    VectorSettings,
)
from argilla_server.search_engine.base import (
    AndFilter,
    Filter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    MetadataMetrics,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)
from sqlalchemy import func, select

ENGINE_NAME = "align-sql"


class _Row:
    """One record with its responses and suggestions, as plain Python values."""

    __slots__ = (
        "id",
        "external_id",
        "fields",
        "metadata",
        "status",
        "inserted_at",
        "updated_at",
        "responses",
        "suggestions",
    )

    def __init__(self, rec):
        self.id, self.external_id, self.fields, self.metadata, self.status, self.inserted_at, self.updated_at = rec
        self.fields = self.fields or {}
        self.metadata = self.metadata or {}
        self.responses: list[dict] = []
        self.suggestions: dict[str, dict] = {}


@SearchEngine.register(engine_name=ENGINE_NAME)
class SQLSearchEngine(SearchEngine):
    @classmethod
    async def new_instance(cls) -> SQLSearchEngine:
        return cls()

    async def close(self):
        pass

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict:
        return {"engine": ENGINE_NAME, "backend": "the server's SQL database"}

    # -- indexing hooks: the SQL tables are the index ----------------------------------------------
    async def create_index(self, dataset: Dataset):
        pass

    async def delete_index(self, dataset: Dataset):
        pass

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty):
        pass

    async def configure_index_vectors(self, vector_settings: VectorSettings):
        pass

    async def index_records(self, dataset: Dataset, records: Iterable[Record]):
        pass

    async def partial_record_update(self, record: Record, **update):
        pass

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]):
        pass

    async def update_record_response(self, response: Response):
        pass

    async def delete_record_response(self, response: Response):
        pass

    async def update_record_suggestion(self, suggestion: Suggestion):
        pass

    async def delete_record_suggestion(self, suggestion: Suggestion):
        pass

    # -- progress and metrics ----------------------------------------------------------------------
    async def get_dataset_progress(self, dataset: Dataset) -> dict:
        if dataset.is_draft:
            return {}
        query = (
            select(Record.status, func.count(Record.id)).where(Record.dataset_id == dataset.id).group_by(Record.status)
        )
        counts = {str(status): n for status, n in await _execute(query)}
        return {"total": sum(counts.values()), **counts}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict:
        if dataset.is_draft:
            return {}
        query = (
            select(Response.status, func.count(Response.id))
            .join(Record, Record.id == Response.record_id)
            .where(Record.dataset_id == dataset.id, Response.user_id == user.id)
            .group_by(Response.status)
        )
        counts = {str(status): n for status, n in await _execute(query)}
        return {"total": sum(counts.values()), **counts}

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        name = metadata_property.name
        query = select(Record.metadata_).where(Record.dataset_id == metadata_property.dataset_id)
        values = []
        for (meta,) in await _execute(query):
            value = (meta or {}).get(name)
            if value is None:
                continue
            values.extend(value if isinstance(value, list) else [value])
        if metadata_property.type == MetadataPropertyType.terms:
            counts: dict[str, int] = {}
            for value in values:
                counts[str(value)] = counts.get(str(value), 0) + 1
            ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            return TermsMetrics(total=len(values), values=[TermsMetrics.TermCount(term=t, count=c) for t, c in ordered])
        numbers = [v for v in values if isinstance(v, (int, float))]
        cls = IntegerMetadataMetrics if metadata_property.type == MetadataPropertyType.integer else FloatMetadataMetrics
        return cls(min=min(numbers) if numbers else None, max=max(numbers) if numbers else None)

    # -- search ------------------------------------------------------------------------------------
    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: Any | None = None,  # the annotation page passes it; the base signature lacks it
    ) -> SearchResponses:
        rows = await _load_rows(dataset.id)
        matched = [r for r in rows if _matches_text(r, query) and (filter is None or _matches(r, filter))]
        if sort:
            for order in reversed(sort):  # stable sorts, last key first
                _sort_rows(matched, order)
        elif user_id is not None:
            # Each annotator sees the queue in their own, stable order (Elasticsearch: seeded random score).
            matched.sort(key=lambda r: hashlib.sha1(f"{user_id}:{r.id}".encode()).digest())
        items = [SearchResponseItem(record_id=r.id, score=1.0) for r in matched[offset : offset + limit]]
        return SearchResponses(items=items, total=len(matched))

    async def similarity_search(
        self,
        dataset: Dataset,
        vector_settings: VectorSettings,
        value: list[float] | None = None,
        record: Record | None = None,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        max_results: int = 100,
        order: SimilarityOrder = SimilarityOrder.most_similar,
        threshold: float | None = None,
    ) -> SearchResponses:
        if bool(value) == bool(record):
            raise ValueError("Must provide either vector value or record to compute the similarity search")
        target = value or record.vector_value_by_vector_settings(vector_settings)
        if not target:
            raise ValueError("Cannot find a vector value to apply with provided info")
        vectors = dict(
            (rid, vec)
            for rid, vec in await _execute(
                select(Vector.record_id, Vector.value).where(Vector.vector_settings_id == vector_settings.id)
            )
        )
        rows = await _load_rows(dataset.id)
        scored = []
        for r in rows:
            if record is not None and r.id == record.id:
                continue
            if r.id not in vectors or not _matches_text(r, query) or (filter is not None and not _matches(r, filter)):
                continue
            score = (1.0 + _cosine(target, vectors[r.id])) / 2.0  # Elasticsearch's cosine score
            if order == SimilarityOrder.least_similar:
                score = 1.0 - score
            if threshold is None or score >= threshold:
                scored.append((score, r.id))
        scored.sort(key=lambda s: -s[0])
        items = [SearchResponseItem(record_id=rid, score=s) for s, rid in scored[:max_results]]
        return SearchResponses(items=items, total=len(items))


# -- helpers ---------------------------------------------------------------------------------------


async def _execute(query) -> list:
    from argilla_server.database import AsyncSessionLocal  # imported late: settings must be loaded first

    async with AsyncSessionLocal() as db:
        return (await db.execute(query)).all()


async def _load_rows(dataset_id) -> list[_Row]:
    records = await _execute(
        select(
            Record.id,
            Record.external_id,
            Record.fields,
            Record.metadata_,
            Record.status,
            Record.inserted_at,
            Record.updated_at,
        )
        .where(Record.dataset_id == dataset_id)
        .order_by(Record.inserted_at, Record.id)
    )
    rows = {rec[0]: _Row(rec) for rec in records}
    responses = await _execute(
        select(Response.record_id, Response.user_id, Response.status, Response.values)
        .join(Record, Record.id == Response.record_id)
        .where(Record.dataset_id == dataset_id)
    )
    for record_id, user_id, status, values in responses:
        rows[record_id].responses.append({"user_id": user_id, "status": str(status), "values": values or {}})
    suggestions = await _execute(
        select(
            Suggestion.record_id, Question.name, Suggestion.value, Suggestion.score, Suggestion.agent, Suggestion.type
        )
        .join(Question, Question.id == Suggestion.question_id)
        .join(Record, Record.id == Suggestion.record_id)
        .where(Record.dataset_id == dataset_id)
    )
    for record_id, question, value, score, agent, kind in suggestions:
        rows[record_id].suggestions[question] = {
            "value": value,
            "score": score,
            "agent": agent,
            "type": None if kind is None else str(kind),
        }
    return list(rows.values())


def _field_text(value: Any) -> str:
    if isinstance(value, list):  # a chat field: [{"role", "content"}, ...]
        return " ".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
    if isinstance(value, dict):
        return " ".join(str(v) for v in value.values())
    return "" if value is None else str(value)


def _matches_text(row: _Row, query: TextQuery | str | None) -> bool:
    if query is None:
        return True
    text = TextQuery(q=query) if isinstance(query, str) else query
    words = [w.strip('"').lower() for w in text.q.split() if w.strip('"') not in ("", "*")]
    if not words:
        return True
    haystack = (
        _field_text(row.fields.get(text.field)) if text.field else " ".join(_field_text(v) for v in row.fields.values())
    )
    haystack = haystack.lower()
    return all(w in haystack for w in words)


def _matches(row: _Row, flt: Filter) -> bool:
    if isinstance(flt, AndFilter):
        return all(_matches(row, f) for f in flt.filters)
    scope = flt.scope
    if isinstance(scope, ResponseFilterScope):
        return _matches_response(row, flt, scope)
    return _value_matches(_scope_values(row, scope), flt)


def _matches_response(row: _Row, flt: Filter, scope: ResponseFilterScope) -> bool:
    responses = row.responses
    if scope.user is not None:
        responses = [r for r in responses if r["user_id"] == scope.user.id]
    if scope.question:
        values = []
        for r in responses:
            answer = r["values"].get(scope.question)
            if isinstance(answer, dict) and answer.get("value") is not None:
                values.append(answer["value"])
        return _value_matches(values, flt)
    if scope.property == "status" and isinstance(flt, TermsFilter):
        wanted = {str(v) for v in flt.values}
        # "pending": no response yet (from this user, or from anyone without a user scope).
        if "pending" in wanted and not responses:
            return True
        return any(r["status"] in wanted for r in responses)
    raise ValueError(f"Cannot process filter scope {scope}")


def _scope_values(row: _Row, scope) -> list:
    if isinstance(scope, MetadataFilterScope):
        value = row.metadata.get(scope.metadata_property)
    elif isinstance(scope, RecordFilterScope):
        value = getattr(row, scope.property, None)
        value = str(value) if scope.property in ("status", "id") and value is not None else value
    elif isinstance(scope, SuggestionFilterScope):
        value = row.suggestions.get(scope.question, {}).get(scope.property)
    else:
        raise ValueError(f"Cannot process search scope {scope}")
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _value_matches(values: list, flt: Filter) -> bool:
    flat = []
    for v in values:
        flat.extend(v if isinstance(v, list) else [v])
    if isinstance(flt, TermsFilter):
        wanted = {str(v) for v in flt.values}
        return any(str(v) in wanted for v in flat)
    if isinstance(flt, RangeFilter):
        for v in flat:
            x = _comparable(v)
            if x is None:
                continue
            if (flt.ge is None or x >= _comparable(flt.ge)) and (flt.le is None or x <= _comparable(flt.le)):
                return True
        return False
    raise ValueError(f"Cannot process filter {flt}")


def _comparable(value: Any):
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return value if isinstance(value, (int, float)) else None


def _sort_rows(rows: list[_Row], order: Order) -> None:
    scope = order.scope

    def key(row: _Row):
        if isinstance(scope, ResponseFilterScope):
            responses = [r for r in row.responses if scope.user is None or r["user_id"] == scope.user.id]
            if scope.question:
                nums = [r["values"].get(scope.question, {}).get("value") for r in responses]
            else:
                nums = [r.get(scope.property) for r in responses]
            nums = [n for n in nums if isinstance(n, (int, float))]
            value = sum(nums) / len(nums) if nums else None
        else:
            values = _scope_values(row, scope)
            value = values[0] if values else None
        if isinstance(value, datetime):
            value = value.timestamp()
        return value

    present = [(key(r), r) for r in rows]
    with_value = [p for p in present if p[0] is not None]
    without = [r for v, r in present if v is None]
    descending = order.order == SortOrder.desc
    try:
        with_value.sort(key=lambda p: p[0], reverse=descending)
    except TypeError:  # mixed types: compare as text
        with_value.sort(key=lambda p: str(p[0]), reverse=descending)
    rows[:] = [r for _, r in with_value] + without  # missing values last, as Elasticsearch does


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
