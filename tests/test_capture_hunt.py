"""copyhunt.hunt(): isolation between hunts, exactness of the traced program, no tensors kept alive,
per-op storage accesses, threads, modules, filters, errors. x is float32 4 x 6 = 96 bytes."""

from __future__ import annotations

import gc
import inspect
import threading
import types
import warnings
import weakref
from typing import Any

import pytest
import torch

import copyhunt
from copyhunt.errors import CopyhuntError, NoDeviceError
from copyhunt.hunting import Hunt, HuntActiveError, HuntOptionError, hunt
from copyhunt.records import Access, Trace
from copyhunt.tracefile import from_json, to_json


def here() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def x() -> torch.Tensor:
    return torch.arange(24, dtype=torch.float32).reshape(4, 6)


# --- the facade --------------------------------------------------------------------------------


def test_the_package_hunt_is_the_function_once_its_module_is_imported() -> None:
    # The facade's module is named apart from the function: importing it must not rebind copyhunt.hunt.
    import copyhunt.hunting

    assert copyhunt.hunt is copyhunt.hunting.hunt and isinstance(copyhunt.hunt, types.FunctionType)


def test_package_level_hunt_and_start_stop() -> None:
    a = x()
    h = copyhunt.hunt()
    assert isinstance(h, Hunt)
    h.start()
    a.clone()
    trace = h.stop()
    assert trace is h.trace and len(h.copies) == 1
    with copyhunt.hunt() as h2:
        a.clone()
    assert len(h2.copies) == 1


def test_meta_is_filled() -> None:
    with hunt() as h:
        x().clone()
    m = h.trace.meta
    assert (m.copyhunt_version, m.torch_version, m.device, m.complete, m.error) == (
        copyhunt.__version__,
        torch.__version__,
        "cpu",
        True,
        None,
    )
    assert m.python.count(".") == 2 and m.started_at is not None and m.duration_s is not None and m.duration_s >= 0
    # The trace survives the file format.
    assert from_json(to_json(h.trace)) == h.trace


def test_two_hunts_do_not_leak_records() -> None:
    a = x()
    with hunt() as h1:
        a.clone()
        a.clone()
    with hunt() as h2:
        l2 = here(); a.to(torch.float64)  # fmt: skip
    assert [c.op for c in h1.copies] == ["aten.clone.default", "aten.clone.default"]
    assert [(c.op, c.site.line) for c in h2.copies] == [("aten._to_copy.default", l2)]
    # Numbering and storage ids are local to each hunt.
    assert h2.trace.ops[0].seq == 0 and h2.trace.storages[0].id == 0
    assert len(h2.trace.ops) == 1


def test_nested_hunt_raises_and_outer_continues() -> None:
    a = x()
    with hunt() as outer:
        with pytest.raises(HuntActiveError, match="already running"):
            with hunt():
                pass
        a.clone()
    assert len(outer.copies) == 1
    assert issubclass(HuntActiveError, CopyhuntError)
    with hunt() as again:  # the failed nested start left nothing behind
        a.clone()
    assert len(again.copies) == 1


def test_raising_block_marks_trace_incomplete_and_propagates() -> None:
    a = x()
    with pytest.raises(ValueError, match="boom"):
        with hunt() as h:
            a.clone()
            raise ValueError("boom\nsecond line")
    assert h.trace.meta.complete is False
    assert h.trace.meta.error == "ValueError: boom"
    assert len(h.copies) == 1  # what ran before the error is kept


def test_interrupted_block() -> None:
    with pytest.raises(KeyboardInterrupt):
        with hunt() as h:
            raise KeyboardInterrupt
    assert (h.trace.meta.complete, h.trace.meta.error) == (False, "interrupted (KeyboardInterrupt)")


def test_bad_options() -> None:
    with pytest.raises(HuntOptionError, match="kinds 'x2y' is not a copy kind"):
        hunt(kinds=["d2d", "x2y"])
    with pytest.raises(HuntOptionError, match="stack_depth"):
        hunt(stack_depth=0)
    with pytest.raises(HuntOptionError, match="region"):
        hunt(region="")
    with pytest.raises(HuntOptionError, match="not finished"):
        _ = hunt().copies


def test_kinds_are_a_view_over_a_full_capture() -> None:
    a = x()
    with hunt(kinds=["H2D", "d2h"]) as h:
        a.clone()
    # h.copies shows the selection; the trace keeps every copy and records the view.
    assert h.copies == () and len(h.trace.copies) == 1 and len(h.trace.ops) == 1
    assert h.trace.meta.view == {"kinds": ["h2d", "d2h"]}
    with hunt(kinds="d2d") as h2:
        a.clone()
    assert len(h2.copies) == 1


def test_device_trace_without_device_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # Simulate an install without copyhunt.capture.device: the import must fail by that name.
    monkeypatch.setitem(sys.modules, "copyhunt.capture.device", None)
    with pytest.raises(NoDeviceError, match="copyhunt.capture.device is missing"):
        with hunt(device_trace=True):
            pass
    with hunt() as h:  # and the failed start left no hunt running
        x().clone()
    assert len(h.copies) == 1


# --- the traced program is unchanged, and nothing is kept alive --------------------------------


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 8)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.lin(a))
        h = torch.cat([h, h.t().contiguous().t()], dim=1)
        h[:, :2] = h[:, 2:4]
        return torch.nn.functional.pad(h, (1, 1)).repeat(2, 1).to(torch.float64)


@pytest.mark.parametrize("ctx", ["normal", "inference_mode"])
def test_results_bit_identical_with_and_without_tracing(ctx: str) -> None:
    torch.manual_seed(0)
    model = Small()
    a = torch.randn(5, 6)
    cm = torch.inference_mode if ctx == "inference_mode" else torch.no_grad
    with cm():
        ref = model(a)
        with hunt() as h:
            got = model(a)
    assert torch.equal(ref, got) and ref.dtype == got.dtype == torch.float64
    assert len(h.copies) >= 5


def _reachable_tensors(root: Any, limit: int = 200_000) -> list[torch.Tensor]:
    # Walk everything reachable from ``root``, except shared global state: modules, classes, code,
    # and a function's globals (its closure cells and defaults are walked: they could hold tensors).
    seen: set[int] = set()
    todo = [root]
    found = []
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (types.ModuleType, type, types.CodeType)):
            continue
        seen.add(id(o))
        assert len(seen) < limit, "walked too far: the hunt reaches global state"
        if isinstance(o, torch.Tensor):
            found.append(o)
            continue
        if isinstance(o, types.FunctionType):
            todo.extend(c.cell_contents for c in (o.__closure__ or ()))
            todo.extend(o.__defaults__ or ())
            continue
        todo.extend(gc.get_referents(o))
    return found


def test_tensors_made_inside_a_hunt_are_freed_after_it() -> None:
    a = x()
    with hunt() as h:
        made = a.clone() * 2
        copy_dst = made.t().contiguous()
        ref_made, ref_dst = weakref.ref(made), weakref.ref(copy_dst)
    del made, copy_dst
    assert ref_made() is None and ref_dst() is None
    assert _reachable_tensors(h) == []
    assert len(_reachable_tensors([h, a])) == 1  # the walk does find a tensor when one is there
    assert len(h.copies) == 2


def test_hunt_object_holds_no_tensor_while_running() -> None:
    a = x()
    h = hunt()
    h.start()
    try:
        b = a.clone()
        b.add_(1)
        assert _reachable_tensors(h) == []
    finally:
        h.stop()


# --- per-op storage accesses --------------------------------------------------------------------


def test_op_records_reads_writes_allocs() -> None:
    a = x()
    buf = torch.zeros(4, 6)
    with hunt() as h:
        b = a.clone()  # seq 0: read a, write+alloc b
        buf.add_(b)  # seq 1: read-modify-write buf, read b
        buf.copy_(a)  # seq 2: pure overwrite of buf, read a
        v = buf[1:3]  # seq 3: a view, neither read nor written
        buf[:, 1:3] = 0.0  # seq 4-6: wrap 0.0, slice view, fill_ of a strided range
        c = torch.add(a, 1, out=torch.empty(4, 6))  # seq 7 empty, seq 8 add.out: write-only out
    del b, v, c
    ops = h.trace.ops
    assert [o.op for o in ops] == [
        "aten.clone.default",
        "aten.add_.Tensor",
        "aten.copy_.default",
        "aten.slice.Tensor",
        "aten.lift_fresh.default",
        "aten.slice.Tensor",
        "aten.fill_.Tensor",
        "aten.empty.memory_format",
        "aten.add.out",
    ]
    sa, sb = ops[0].reads[0].storage, ops[0].allocs[0]
    sbuf = ops[1].writes[0].storage
    full = (0, 96, True)  # offset, nbytes, dense of a whole 4 x 6 float32 tensor
    assert ops[0].reads == (Access(sa, *full),) and ops[0].writes == (Access(sb, *full),) and ops[0].is_copy
    assert ops[1].reads == (Access(sbuf, *full), Access(sb, *full)) and ops[1].writes == (Access(sbuf, *full),)
    assert ops[1].allocs == () and not ops[1].is_copy
    assert ops[2].reads == (Access(sa, *full),) and ops[2].writes == (Access(sbuf, *full),)
    assert ops[3].reads == ops[3].writes == ()
    # buf[:, 1:3]: offset 1 element = 4 bytes; last element at 3*6 + 1 = 19 -> span 20 elements = 80 bytes;
    # strided, so not dense; fill_ overwrites buf without reading it (it reads the 4-byte 0-dim value).
    assert ops[6].writes == (Access(sbuf, 4, 80, False),)
    assert [(r.storage != sbuf, r.nbytes) for r in ops[6].reads] == [(True, 4)]
    sout = ops[7].allocs[0]
    assert ops[8].reads == (Access(sa, *full),) and ops[8].writes == (Access(sout, *full),) and ops[8].allocs == ()
    assert {sa, sb, sbuf, sout} <= {s.id for s in h.trace.storages}
    assert {s.device for s in h.trace.storages} == {"cpu"}


def test_index_put_write_is_partial() -> None:
    dst = torch.zeros(4, 6)
    idx = torch.tensor([1])
    with hunt() as h:
        dst[idx] = 3.0
    (op,) = [o for o in h.trace.ops if o.is_copy]
    # index_put_ writes only the indexed row: the range of dst is not densely written, nor read.
    assert [w.dense for w in op.writes] == [False] and op.writes[0].nbytes == 96
    assert all(r.storage != op.writes[0].storage for r in op.reads)


def test_frees_and_alive_at_end() -> None:
    a = x()
    with hunt() as h:
        tmp = a.clone()  # seq 0
        del tmp  # the clone's storage dies here
        for _ in range(16):  # later ops notice it (checked every few ops)
            a.sin()
        keep = a.clone()
    storages = {s.id: s for s in h.trace.storages}
    dead = h.copies[0].dst_storage
    freed_at = [o.seq for o in h.trace.ops if dead in o.frees]
    assert len(freed_at) == 1 and 0 < freed_at[0] <= 16
    assert storages[dead].alive_at_end is False
    assert storages[h.copies[1].dst_storage].alive_at_end is True
    assert storages[h.copies[0].src_storage].alive_at_end is True
    del keep


def test_reused_addresses_get_new_storage_ids() -> None:
    a = x()
    addrs = []
    with hunt() as h:
        t = a.clone()
        for _ in range(50):
            t = a.clone()  # the previous clone is freed: the allocator may reuse its address
            addrs.append(t.untyped_storage()._cdata)
    dsts = [c.dst_storage for c in h.copies]
    # every clone got its own storage id, however often the StorageImpl addresses repeated
    assert len(set(dsts)) == 51 >= len(set(addrs))
    del t


def test_storage_table_gives_a_new_id_to_a_new_storage_at_a_dead_address() -> None:
    from copyhunt.capture.storages import StorageTable

    table = StorageTable()
    t1 = torch.ones(4)
    sid1, new1, replaced1 = table.lookup(t1)
    assert (sid1, new1, replaced1) == (0, True, None)
    assert table.lookup(t1) == (0, False, None)  # same live storage: same id
    del t1
    # Make the next storage's address map to the dead entry, as a reused address would.
    t2 = torch.ones(4)
    table.by_cdata[t2.untyped_storage()._cdata] = 0
    assert table.lookup(t2) == (1, True, 0)  # new id, and the dead one is reported replaced
    assert table.lookup(t2) == (1, False, None)
    assert table.close() == {0: False, 1: True}  # liveness at close, by id


# --- threads and modules -----------------------------------------------------------------------


def test_copy_in_a_second_thread_has_its_thread_and_site() -> None:
    a = x()
    got: dict[str, int] = {}

    def worker() -> None:
        got["tid"] = threading.get_ident()
        got["line"] = here(); a.to(torch.float64)  # fmt: skip

    with hunt() as h:
        main_line = here(); a.clone()  # fmt: skip
        th = threading.Thread(target=worker)
        th.start()
        th.join()
    by_op = {c.op: c for c in h.copies}
    assert set(by_op) == {"aten.clone.default", "aten._to_copy.default"}
    assert by_op["aten.clone.default"].thread == threading.get_ident()
    assert by_op["aten.clone.default"].site.line == main_line
    w = by_op["aten._to_copy.default"]
    assert (w.thread, w.site.line, w.site.function) == (got["tid"], got["line"], "worker")
    assert w.thread != threading.get_ident()


def test_thread_outliving_the_hunt_is_not_traced_after_it() -> None:
    a = x()
    go = threading.Event()
    done = threading.Event()

    def worker() -> None:
        go.wait(5)
        a.clone()
        done.set()

    with hunt() as h:
        th = threading.Thread(target=worker)
        th.start()
    go.set()
    th.join(5)
    assert done.is_set() and h.copies == ()
    with hunt() as h2:  # a later hunt is unaffected by the leftover pass-through mode
        a.clone()
    assert len(h2.copies) == 1


class Inner(torch.nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.clone()


class Helper(torch.nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.repeat(1, 1)


class Outer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([Inner(), Inner()])
        self.helper_not_registered = [Helper()]

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            a = layer(a)
        a = self.helper_not_registered[0](a)
        return a.t().contiguous()


def test_module_paths() -> None:
    m = Outer()
    with hunt() as h:
        m(x())
    assert [(c.op, c.module) for c in h.copies] == [
        ("aten.clone.default", "Outer.layers.0"),
        ("aten.clone.default", "Outer.layers.1"),
        ("aten.repeat.default", "Outer.Helper"),  # not registered under the root: class name
        ("aten.clone.default", "Outer"),
    ]
    # the site is the line in forward, past torch's Module.__call__ frames
    assert h.copies[0].site.function == "forward" and h.copies[0].site.file == __file__
    assert h.copies[0].stack[0] == h.copies[0].site and len(h.copies[0].stack) <= 8
    with hunt() as h2:  # hooks are gone after a hunt and come back cleanly
        x().clone()
    assert h2.copies[0].module is None


def test_module_path_restored_after_a_raising_forward() -> None:
    class Boom(torch.nn.Module):
        def forward(self, a: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with hunt() as h:
        with pytest.raises(RuntimeError):
            Boom()(x())
        x().clone()
    assert h.copies[0].module is None


def test_stack_depth_limits_the_short_stack() -> None:
    def f1(a: torch.Tensor) -> torch.Tensor:
        return f2(a)

    def f2(a: torch.Tensor) -> torch.Tensor:
        return a.clone()

    with hunt(stack_depth=2) as h:
        f1(x())
    c = h.copies[0]
    assert [f.function for f in c.stack] == ["f2", "f1"]


def test_copies_only_hunt_records_the_same_copies() -> None:
    a = x()

    def work() -> None:
        b = a + 1
        b.clone()
        a.t().contiguous()

    with hunt() as full:
        work()
    with hunt(record_ops=False) as lite:
        work()
    key = lambda c: (c.op, c.kind, c.bytes, c.site, c.seq)  # noqa: E731
    assert [key(c) for c in lite.copies] == [key(c) for c in full.copies]
    assert len(full.trace.ops) == 4  # add, clone, t, clone
    assert [o.op for o in lite.trace.ops] == ["aten.clone.default", "aten.clone.default"]
    assert any("record_ops=False" in n for n in lite.trace.meta.notes)


def test_stop_from_another_thread_is_refused() -> None:
    h = hunt()
    h.start()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            h.stop()
        except HuntActiveError as exc:
            errors.append(exc)

    th = threading.Thread(target=other)
    th.start()
    th.join()
    trace = h.stop()  # the starting thread can still stop it
    assert [str(e) for e in errors] == ["a hunt must be stopped from the thread that started it"]
    assert trace.meta.complete


def test_a_failure_of_ours_never_masks_the_users_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    from copyhunt.capture.dispatch import DispatchCapture

    def broken_build(self: DispatchCapture, attribute: Any = None) -> Any:
        raise RuntimeError("internal")

    monkeypatch.setattr(DispatchCapture, "build", broken_build)
    with pytest.raises(ValueError, match="user"):
        with hunt() as h:
            raise ValueError("user")
    assert h.trace.meta.complete is False and h.trace.meta.error == "ValueError: user"
    assert h.trace.meta.notes == ("copyhunt could not build the trace: RuntimeError: internal",)
    with pytest.raises(RuntimeError, match="internal"):  # without a user exception, ours shows
        with hunt():
            pass


def test_unusual_tensors_are_recorded_without_internal_errors() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the nested-tensor prototype warning
        with hunt() as h:
            torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)  # clone: 120 x 4 = 480 B
            torch.empty(0, 3).clone()  # 0 B
            torch.tensor(3.0).clone()  # 0-dim: 4 B
            torch.randn(3, dtype=torch.complex64).clone()  # 3 x 8 = 24 B
            torch.empty(4, 4, device="meta").clone()  # meta: 16 x 4 = 64 B
            torch.eye(3).to_sparse().clone()  # sparse: no storage; bytes from the dense numel
            torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)]).clone()  # nested: 18 x 4 B
    assert h.trace.meta.notes == ()  # nothing failed inside the recorder
    assert [(c.bytes, c.dst_device) for c in h.copies if c.op == "aten.clone.default"] == [
        (480, "cpu"),
        (0, "cpu"),
        (4, "cpu"),
        (24, "cpu"),
        (64, "meta"),
        (36, "cpu"),
        (72, "cpu"),
    ]
    sparse, nested = [c for c in h.copies if c.op == "aten.clone.default"][-2:]
    assert sparse.dst_storage is None and sparse.dst_contiguous is False
    assert nested.shape == ()



class FakeDeviceCapture:
    """Stands in for copyhunt.capture.device.DeviceCapture: records how hunt drives it."""

    calls: list[Any] = []

    def __enter__(self) -> "FakeDeviceCapture":
        self.calls.append("enter")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.calls.append(("exit", exc_type))

    def op_range(self, seq: int, op: str) -> Any:
        import contextlib

        self.calls.append(("range", seq, op))
        return contextlib.nullcontext()

    def join(self, trace: Trace) -> Trace:
        import dataclasses

        self.calls.append("join")
        return dataclasses.replace(trace, meta=dataclasses.replace(trace.meta, gpu_time_us=1.5))


def test_device_trace_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    fake = types.ModuleType("copyhunt.capture.device")
    fake.DeviceCapture = FakeDeviceCapture  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "copyhunt.capture.device", fake)
    FakeDeviceCapture.calls = []
    a = x()
    with pytest.raises(ValueError):
        with hunt(device_trace=True) as h:
            a + 1  # not a copy, but ranged too: a device copy made inside it must find its op
            a.clone()
            raise ValueError("stop")
    # one range per op, keyed by its seq; exit sees the block's exception; join builds h.trace
    assert FakeDeviceCapture.calls == [
        "enter", ("range", 0, "aten.add.Tensor"), ("range", 1, "aten.clone.default"), ("exit", ValueError), "join"
    ]  # fmt: skip
    assert h.copies[0].seq == 1 and h.trace.meta.gpu_time_us == 1.5 and h.trace.meta.complete is False
