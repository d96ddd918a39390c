"""LlamaIndex ``MetadataFilters`` -> LanceDB SQL predicates and Weaviate ``Filter`` objects.

Only the keys in ``FILTER_FIELDS`` (plus ``node_id``) can be filtered on; any other key, and any
operator a backend cannot translate, raises an error naming it: a filter never matches silently.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from .base import require
from .errors import UnsupportedFilterError
from .nodes import FILTER_FIELDS, ID_KEYS, has_filters, timestamp_bound, timestamp_str

__all__ = [
    "LANCE_OPERATORS",
    "WEAVIATE_OPERATORS",
    "and_where",
    "check_filter_key",
    "ids_where",
    "lance_where",
    "sql_str",
    "weaviate_filter",
]

_COMPARE = (FilterOperator.EQ, FilterOperator.NE, FilterOperator.GT, FilterOperator.GTE,
            FilterOperator.LT, FilterOperator.LTE)
_SETS = (FilterOperator.IN, FilterOperator.NIN)
_TEXT = (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE)
LANCE_OPERATORS = _COMPARE + _SETS + _TEXT + (FilterOperator.IS_EMPTY,)
WEAVIATE_OPERATORS = LANCE_OPERATORS


def check_filter_key(key: str) -> None:
    """Raise ValueError unless ``key`` is a filterable metadata key or a node-id key."""
    if key not in FILTER_FIELDS and key not in ID_KEYS:
        raise ValueError(
            f"cannot filter on metadata key {key!r}: filterable keys are "
            f"{', '.join(list(FILTER_FIELDS) + ['node_id'])}"
        )


def _check_operator(f: MetadataFilter, backend: str, supported: Sequence[FilterOperator]) -> None:
    if f.operator not in supported:
        op = getattr(f.operator, "value", f.operator)
        raise UnsupportedFilterError(f.key, str(op), backend, [o.value for o in supported])


def _one_value(f: MetadataFilter) -> Any:
    if isinstance(f.value, (list, tuple, set)):
        raise ValueError(f"filter on {f.key!r}: operator {f.operator.value!r} takes one value, not a list")
    return f.value


def _values(f: MetadataFilter) -> list:
    return list(f.value) if isinstance(f.value, (list, tuple, set)) else [f.value]


def _kind(key: str) -> str:
    return "text" if key in ID_KEYS else FILTER_FIELDS[key]


def _typed(key: str, value: Any, op: FilterOperator) -> Any:
    """A filter value as the stored field's type: int, UTC datetime (a bound for ``op``) or str."""
    kind = _kind(key)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"filter on {key!r}: expected a number, got {value!r}")
        return int(value)
    if kind == "date":
        return timestamp_bound(value, op)
    return str(value)


# comparison operator -> (Lance SQL operator, Weaviate Filter method)
_COMPARE_OPS = {
    FilterOperator.EQ: ("=", "equal"),
    FilterOperator.NE: ("!=", "not_equal"),
    FilterOperator.GT: (">", "greater_than"),
    FilterOperator.GTE: (">=", "greater_or_equal"),
    FilterOperator.LT: ("<", "less_than"),
    FilterOperator.LTE: ("<=", "less_or_equal"),
}


# --------------------------------------------------------------------------------------------------
# LanceDB SQL
# --------------------------------------------------------------------------------------------------


def sql_str(value: Any) -> str:
    """``value`` as a single-quoted Lance SQL literal with quotes escaped."""
    return "'" + str(value).replace("'", "''") + "'"


def _lance_col(key: str) -> str:
    return "id" if key in ID_KEYS else f"metadata.{key}"


def _lance_lit(key: str, value: Any, op: FilterOperator) -> str:
    v = _typed(key, value, op)
    if isinstance(v, int):
        return str(v)
    return sql_str(v if isinstance(v, str) else timestamp_str(v))


def _lance_expr(f: MetadataFilter) -> str:
    check_filter_key(f.key)
    _check_operator(f, "LanceDB", LANCE_OPERATORS)
    col, op = _lance_col(f.key), f.operator
    if op == FilterOperator.IS_EMPTY:
        return f"({col} IS NULL)"
    if op in _SETS:
        values = _values(f)
        if not values:
            return "(1 = 0)" if op == FilterOperator.IN else "(1 = 1)"
        lits = ", ".join(_lance_lit(f.key, v, FilterOperator.EQ) for v in values)
        if op == FilterOperator.IN:
            return f"({col} IN ({lits}))"
        return f"({col} IS NULL OR {col} NOT IN ({lits}))"
    if op in _TEXT:
        pat = sql_str(f"%{f.value}%")
        if op == FilterOperator.TEXT_MATCH:
            return f"({col} LIKE {pat})"
        return f"(lower({col}) LIKE lower({pat}))"
    expr = f"{col} {_COMPARE_OPS[op][0]} {_lance_lit(f.key, _one_value(f), op)}"
    # LlamaIndex semantics: a missing value counts as "not equal".
    return f"({col} IS NULL OR {expr})" if op == FilterOperator.NE else f"({expr})"


def _compile(filters: Optional[MetadataFilters], leaf: Callable[[MetadataFilter], Any],
             combine: Callable[[FilterCondition, List[Any]], Any], nested: Callable[[Any], Any]) -> Any:
    """Walk ``filters`` (None = no filter): ``leaf`` translates one filter, ``combine`` joins the parts
    of one level under its condition, ``nested`` wraps a sub-level's result."""
    if not has_filters(filters):
        return None
    assert filters is not None
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = _compile(f, leaf, combine, nested)
            if sub is not None:
                parts.append(nested(sub))
        else:
            parts.append(leaf(f))
    return combine(filters.condition or FilterCondition.AND, parts) if parts else None


def _lance_combine(cond: FilterCondition, parts: List[str]) -> str:
    if cond == FilterCondition.OR:
        return " OR ".join(parts)
    if cond == FilterCondition.NOT:
        return "NOT (" + " OR ".join(parts) + ")"
    return " AND ".join(parts)


def lance_where(filters: Optional[MetadataFilters]) -> Optional[str]:
    """``filters`` -> a LanceDB SQL predicate over the ``metadata`` struct (None = no filter)."""
    return _compile(filters, _lance_expr, _lance_combine, lambda sub: f"({sub})")


def and_where(*preds: Optional[str]) -> Optional[str]:
    """The SQL conjunction of the non-empty predicates ``preds`` (None when there are none)."""
    ps = [p for p in preds if p]
    if not ps:
        return None
    return ps[0] if len(ps) == 1 else " AND ".join(f"({p})" for p in ps)


def ids_where(ids: Sequence[str]) -> str:
    """SQL predicate for rows whose ``id`` is one of ``ids`` (matches nothing for an empty list)."""
    if not ids:
        return "(1 = 0)"
    return "id IN (" + ", ".join(sql_str(i) for i in ids) + ")"


# --------------------------------------------------------------------------------------------------
# Weaviate
# --------------------------------------------------------------------------------------------------


def _wv_expr(f: MetadataFilter, Filter: Any) -> Any:
    check_filter_key(f.key)
    _check_operator(f, "Weaviate", WEAVIATE_OPERATORS)
    prop = Filter.by_property("node_id" if f.key in ID_KEYS else f.key)
    op = f.operator
    if op == FilterOperator.IS_EMPTY:
        return prop.is_none(True)
    if op in _SETS:
        values = _values(f)
        if not values:
            raise ValueError(f"filter on {f.key!r}: empty list for {op.value!r}")
        expr = prop.contains_any([_typed(f.key, v, FilterOperator.EQ) for v in values])
        return expr if op == FilterOperator.IN else Filter.not_(expr)
    if op in _TEXT:
        return prop.like(f"*{f.value}*")
    return getattr(prop, _COMPARE_OPS[op][1])(_typed(f.key, _one_value(f), op))


def weaviate_filter(filters: Optional[MetadataFilters]) -> Any:
    """``filters`` -> a ``weaviate.classes.query.Filter`` (None = no filter)."""
    if not has_filters(filters):
        return None
    Filter = require("weaviate.classes.query", "weaviate").Filter

    def combine(cond: FilterCondition, parts: List[Any]) -> Any:
        if cond == FilterCondition.NOT:
            return Filter.not_(parts[0] if len(parts) == 1 else Filter.any_of(parts))
        if len(parts) == 1:
            return parts[0]
        return Filter.any_of(parts) if cond == FilterCondition.OR else Filter.all_of(parts)

    return _compile(filters, lambda f: _wv_expr(f, Filter), combine, lambda sub: sub)
