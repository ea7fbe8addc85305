"""Filtered search: typed field columns, the ``where=`` predicate language, its vectorised
evaluation into row masks, and the choice of search strategy from a mask's count.

docs/filters.md describes the language and the strategies; docs/format.md ("Fields") the columns.
This package sits in the layer of vecstore.plan and vecstore.query: it imports only those and
vecstore.errors, and knows nothing of files.
"""

from .columns import Column, check_names, concat, encode_fields, take
from .evaluate import Predicate, compile_filter
from .parse import parse

__all__ = ["Column", "Predicate", "check_names", "compile_filter", "concat", "encode_fields", "parse", "take"]
