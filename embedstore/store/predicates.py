"""`--where` predicates: accepted only when DuckDB parses them as one boolean expression over known
columns, then applied as that expression (re-serialised from DuckDB's own parse tree).

A predicate cannot read a file, run a subquery, stack a statement or break out of its
parentheses: anything but column references, constants, comparisons, AND / OR / NOT, IN,
BETWEEN, IS [NOT] NULL, CASE and a few scalar functions is refused, naming the part.
"""

from __future__ import annotations

import json

from embedstore.errors import InputError

# Scalar functions a predicate may call: string and number helpers, no table functions, no I/O.
FUNCTIONS = {
    "~~", "!~~", "~~*", "!~~*", "lower", "upper", "length", "coalesce", "abs", "round", "floor", "ceil",
    "starts_with", "ends_with", "contains", "prefix", "suffix", "regexp_matches", "strlen", "trim",
    "+", "-", "*", "/", "%", "//",
}
NODES = {"COLUMN_REF", "CONSTANT", "COMPARISON", "CONJUNCTION", "OPERATOR", "BETWEEN", "CASE", "FUNCTION"}
FORBIDDEN_OPERATORS = {"OPERATOR_UNPACK"}


def checked(con, where: str, columns: set[str]) -> str:
    """The predicate as DuckDB re-prints it from its parse tree, after checking that it is one
    boolean expression over `columns` (names compared case-insensitively); InputError naming what
    is not allowed. `con` is any DuckDB connection (only its parser is used)."""
    text = str(where).strip()
    if not text:
        raise InputError("--where is empty; give a predicate such as \"view = 'frontal'\"")
    tree = json.loads(con.sql("SELECT json_serialize_sql(?::VARCHAR)",
                              params=[f"SELECT * FROM t WHERE {text}"]).fetchall()[0][0])
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise InputError(f"--where {text!r}: not one predicate (a boolean expression over image columns, "
                         "e.g. \"view = 'frontal' AND split = 'test'\")")
    node = tree["statements"][0]["node"]
    extra = [k for k in ("modifiers", "group_expressions", "group_sets") if node.get(k)]
    if node.get("type") != "SELECT_NODE" or extra or node.get("having") or node.get("qualify") or \
            node.get("cte_map", {}).get("map"):
        raise InputError(f"--where {text!r}: only a predicate is allowed, not a query")
    where = node["where_clause"]
    _check(where, {c.lower() for c in columns}, text)
    as_select = {"error": False, "statements": [{"node": {
        **node, "select_list": [where], "where_clause": None, "from_table": {"type": "EMPTY"}}}]}
    return con.sql("SELECT json_deserialize_sql(?::JSON)",
                   params=[json.dumps(as_select)]).fetchall()[0][0].removeprefix("SELECT ")


def _check(node, columns: set[str], text: str) -> None:
    if isinstance(node, list):
        for item in node:
            _check(item, columns, text)
        return
    if not isinstance(node, dict):
        return
    if "class" in node and "type" in node:
        kind = node["class"]
        if kind not in NODES or node["type"] in FORBIDDEN_OPERATORS:
            raise InputError(f"--where {text!r}: {kind.lower()} ({node['type'].lower()}) is not allowed in a "
                             "predicate; use columns, constants, comparisons, AND/OR/NOT, IN, BETWEEN, IS NULL")
        if kind == "COLUMN_REF":
            name = ".".join(node["column_names"])
            if name.lower() not in columns:
                raise InputError(f"--where {text!r}: unknown column {name!r}; columns: "
                                 f"{', '.join(sorted(columns))}")
        if kind == "FUNCTION" and node["function_name"].lower() not in FUNCTIONS:
            raise InputError(f"--where {text!r}: function {node['function_name']}() is not allowed in a predicate")
    for key, value in node.items():
        if key not in ("class", "type"):
            _check(value, columns, text)
