"""The compact part of the trace file ``copyhunt.trace/3``: op and storage records stored as columns.

A hunt of a long decode loop records hundreds of thousands of ops; written one JSON object each
(version 2) every op repeats its keys and its source file's path: about 550 bytes an op.
Here each field of the op records is one array (a "column"); op names, modules, regions and devices
are indices into a string table; source sites and stack frames are indices into a frame table;
a column whose values are all equal is stored once as ``{"all": value}``, and consecutive seqs as
``{"from": first}``. An op's reads and writes are flat arrays ``[storage, offset, nbytes, dense, ...]``
(dense: 1 or 0). docs/trace-format.md has the layout.

Decoding builds the same records as before, sharing equal ``Access`` and ``Frame`` objects.
Malformed columns raise ``TraceFormatError`` (or TypeError/ValueError, which the reader turns into
one line naming the file).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from copyhunt.errors import TraceFormatError
from copyhunt.records import Access, Frame, OpRecord, StorageInfo

__all__ = ["Interned", "ops_to_columns", "ops_from_columns", "storages_to_columns", "storages_from_columns",
           "frames_from_json"]


class Interned:
    """The string and frame tables of one file being written: each value once, referred to by index."""

    def __init__(self) -> None:
        self.strings: dict[str, int] = {}
        self.frames: dict[Frame, int] = {}

    def string(self, value: str | None) -> int | None:
        """Index of ``value`` in the string table (None stays None)."""
        if value is None:
            return None
        i = self.strings.get(value)
        if i is None:
            i = self.strings[value] = len(self.strings)
        return i

    def frame(self, value: Frame | None) -> int | None:
        """Index of ``value`` in the frame table (None stays None)."""
        if value is None:
            return None
        i = self.frames.get(value)
        if i is None:
            i = self.frames[value] = len(self.frames)
        return i

    def tables(self) -> dict[str, Any]:
        """The ``strings`` and ``frames`` arrays of the document."""
        return {"strings": list(self.strings), "frames": [[f.file, f.line, f.function] for f in self.frames]}


def _column(values: list[Any]) -> Any:
    """A column: ``{"all": v}`` when every value is ``v`` (and there is at least one), else the list."""
    if values and all(v == values[0] for v in values) and not isinstance(values[0], list):
        return {"all": values[0]}
    return values


def _seq_column(seqs: list[int]) -> Any:
    if seqs and all(s == seqs[0] + i for i, s in enumerate(seqs)):
        return {"from": seqs[0]}
    return seqs


def _flat(accesses: Iterable[Access]) -> list[int]:
    out: list[int] = []
    for a in accesses:
        out += (a.storage, a.offset, a.nbytes, 1 if a.dense else 0)
    return out


def ops_to_columns(ops: Sequence[OpRecord], tables: Interned) -> dict[str, Any]:
    """The ``ops`` object of a /3 document."""
    s, f = tables.string, tables.frame
    return {
        "n": len(ops),
        "seq": _seq_column([o.seq for o in ops]),
        "op": _column([s(o.op) for o in ops]),
        "reads": [_flat(o.reads) for o in ops],
        "writes": [_flat(o.writes) for o in ops],
        "allocs": _column_of_lists([list(o.allocs) for o in ops]),
        "frees": _column_of_lists([list(o.frees) for o in ops]),
        "site": _column([f(o.site) for o in ops]),
        "module": _column([s(o.module) for o in ops]),
        "region": _column([s(o.region) for o in ops]),
        "thread": _column([o.thread for o in ops]),
        "is_copy": _column([1 if o.is_copy else 0 for o in ops]),
        "captured_in_graph": _column([1 if o.captured_in_graph else 0 for o in ops]),
    }


def _column_of_lists(values: list[list[int]]) -> Any:
    return {"all": []} if values and not any(values) else values


def storages_to_columns(storages: Sequence[StorageInfo], tables: Interned) -> dict[str, Any]:
    """The ``storages`` object of a /3 document."""
    return {
        "n": len(storages),
        "id": _seq_column([st.id for st in storages]),
        "device": _column([tables.string(st.device) for st in storages]),
        "nbytes": _column([st.nbytes for st in storages]),
        "alive_at_end": _column([1 if st.alive_at_end else 0 for st in storages]),
    }


# --- reading ---------------------------------------------------------------------------------


def frames_from_json(raw: Any) -> list[Frame]:
    """The frame table: ``[[file, line, function], ...]``."""
    if not isinstance(raw, list):
        raise TraceFormatError(f"'frames' must be an array, got {type(raw).__name__}")
    out = []
    for f in raw:
        if not isinstance(f, list) or len(f) != 3:
            raise TraceFormatError(f"a frame must be [file, line, function], got {f!r}"[:200])
        out.append(Frame(f[0], f[1], f[2]))  # as written: copyhunt.validation checks the types
    return out


def _values(cols: dict[str, Any], name: str, n: int) -> list[Any]:
    """Column ``name`` as ``n`` values."""
    if name not in cols:
        if n == 0:
            return []
        raise TraceFormatError(f"column {name!r} is missing")
    raw = cols[name]
    if isinstance(raw, dict):
        if "all" in raw:
            return [raw["all"]] * n
        if "from" in raw:
            first = int(raw["from"])
            return list(range(first, first + n))
        raise TraceFormatError(f"column {name!r} must be an array, {{'all': value}} or {{'from': first}}")
    if not isinstance(raw, list) or len(raw) != n:
        got = f"{len(raw)} values" if isinstance(raw, list) else type(raw).__name__
        raise TraceFormatError(f"column {name!r} must hold {n} values, got {got}")
    return raw


def _list(raw: Any, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise TraceFormatError(f"{what} must be a list, got {type(raw).__name__}")
    return raw


def _lookup(table: Sequence[Any], i: Any, what: str) -> Any:
    if i is None:
        return None
    if not isinstance(i, int) or not 0 <= i < len(table):
        raise TraceFormatError(f"{what} index {i!r} is not in the table (it has {len(table)})")
    return table[i]


def _count(cols: Any, what: str) -> int:
    if not isinstance(cols, dict):
        raise TraceFormatError(f"'{what}' must be an object of columns, got {type(cols).__name__}")
    n = cols.get("n")
    if not isinstance(n, int) or n < 0:
        raise TraceFormatError(f"'{what}.n' must be a count, got {n!r}")
    return n


def ops_from_columns(cols: Any, strings: Sequence[str], frames: Sequence[Frame]) -> tuple[OpRecord, ...]:
    """The op records of a /3 ``ops`` object."""
    n = _count(cols, "ops")
    shared: dict[tuple[int, int, int, int], Access] = {}

    def accesses(flat: Any) -> tuple[Access, ...]:
        if not isinstance(flat, list) or len(flat) % 4:
            raise TraceFormatError(f"reads/writes must be flat [storage, offset, nbytes, dense, ...] arrays, got {flat!r}"[:200])
        out = []
        for k in range(0, len(flat), 4):
            key = (flat[k], flat[k + 1], flat[k + 2], flat[k + 3])  # as written: the record checks see them
            a = shared.get(key)
            if a is None:
                a = shared[key] = Access(key[0], key[1], key[2], bool(key[3]))
            out.append(a)
        return tuple(out)

    names = [_lookup(strings, i, "op name") for i in _values(cols, "op", n)]
    return tuple(
        OpRecord(seq, name, accesses(reads), accesses(writes), tuple(_list(allocs, "allocs")),
                 tuple(_list(frees, "frees")), _lookup(frames, site, "frame"), _lookup(strings, module, "module"),
                 _lookup(strings, region, "region"), thread, bool(is_copy), bool(graph))
        for seq, name, reads, writes, allocs, frees, site, module, region, thread, is_copy, graph in zip(
            _values(cols, "seq", n), names, _values(cols, "reads", n), _values(cols, "writes", n),
            _values(cols, "allocs", n), _values(cols, "frees", n), _values(cols, "site", n),
            _values(cols, "module", n), _values(cols, "region", n), _values(cols, "thread", n),
            _values(cols, "is_copy", n), _values(cols, "captured_in_graph", n),
        )
    )


def storages_from_columns(cols: Any, strings: Sequence[str]) -> tuple[StorageInfo, ...]:
    """The storage records of a /3 ``storages`` object."""
    n = _count(cols, "storages")
    return tuple(
        StorageInfo(i, _lookup(strings, device, "device"), nbytes, bool(alive))
        for i, device, nbytes, alive in zip(_values(cols, "id", n), _values(cols, "device", n),
                                            _values(cols, "nbytes", n), _values(cols, "alive_at_end", n))
    )
