// The compiled hot path of copyhunt's capture. Three entry points:
// - record(): Recorder.record and Recorder._record_copy (capture/recording.py), line for line, for the
//   ops whose tensors are all plain dense tensors;
// - dispatch(): _Mode.__torch_dispatch__'s common path (capture/dispatch.py) in one call: plan, sequence
//   number, the op, its record, Dynamo's hook switch;
// - build_ops() / build_storages(): RawLog._read's record building after the hunt (capture/raw.py).
//
// Why it exists: the recorder runs once per aten op of the traced program. In Python, its argument walk,
// storage table, site search and row cost about 1.2 times a bare TorchDispatchMode, on top of the mode
// itself (benchmarks/RESULTS.md, issue 17).
//
// One state, two writers: it reads and writes the SAME Python objects as the Python recorder (the
// storage table's dict and lists, the freed set, the watch list, the site and row logs), so each op
// may take either path and the rows are identical (tests/test_native_recorder.py). It declines what it
// does not handle BEFORE touching any state: a tensor subclass, a non-strided or storage-less tensor,
// symbolic sizes, a second recording thread. Then record_op() returns 0 and the Python recorder takes
// the op. Copies keep their Python facts (capture/copy_ops.py); a copy whose tensors it does not handle
// goes to Recorder._record_copy.
//
// Only c10 headers: the whole torch C++ API would take minutes to compile on first use; these take a
// few seconds. Tensors are reached through their TensorImpl (at an offset calibrated against
// Tensor._cdata). Storages are known by StorageImpl address and raw weak reference (the same handles
// as UntypedStorage._weak_ref, _expired and _free_weak_ref), so nothing here keeps a tensor or a
// storage alive.

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>

#include <c10/core/TensorImpl.h>

#include <algorithm>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// Argument roles (capture/op_roles.py).
constexpr long READ = 0, WRITE = 1, RW = 2;
// Plan fields (capture/op_roles.py Plan, a NamedTuple).
constexpr Py_ssize_t PLAN_NAME = 0, PLAN_ARGS = 1, PLAN_SKIP_OUTPUTS = 2, PLAN_PARTIAL = 3, PLAN_ACCUMULATE = 4,
                     PLAN_COPY_FN = 5;
constexpr int MAX_DEPTH = 64;  // capture/sites.py MAX_DEPTH

struct State {
  // The Python recorder's objects, shared (owned references).
  PyObject* by_cdata;      // dict: StorageImpl address -> storage id
  PyObject* weak;          // list: raw weak handle per id
  PyObject* device;        // list: device name per id
  PyObject* nbytes;        // list: storage bytes per id
  PyObject* table;         // StorageTable (its .threaded flag)
  PyObject* freed;         // set of storage ids reported freed
  PyObject* watch;         // list of watched storage ids
  PyObject* recorder;      // Recorder (_watch_pos, _record_copy)
  PyObject* site_codes;    // dict: id(code) -> (code, rank)
  long wanted;             // the rule's wanted rank
  PyObject* rank_code;     // SiteChooser.rank_code
  PyObject* sites;         // RawLog.sites
  PyObject* site_ids;      // RawLog._site_ids
  PyObject* append_op;     // RawLog._append_op
  PyObject* tids;          // dict: thread ident -> the one int object
  PyObject* mod_state;     // ModuleTracker state or None
  PyObject* region_state;  // regions._state
  PyObject* in_graph;      // callable -> bool, or None (no CUDA)
  PyObject* tensor_type;   // torch.Tensor
  PyObject* plain_types;   // tuple of exact types handled here (torch.Tensor, torch.nn.Parameter)
  PyObject* empty;         // ()
  PyObject* watched;       // set of watched storage ids (Recorder._watched)
  PyObject* copies;        // RawLog.copies
  PyObject* stacks;        // RawLog.stacks
  PyObject* stack_ids;     // RawLog._stack_ids
  long stack_depth;        // Recorder.stack_depth
  std::unordered_map<long long, PyObject*> device_names;  // (type << 16 | index) -> name
  std::unordered_map<int, PyObject*> dtype_names;         // ScalarType -> str(dtype)
  PyObject* mod_dict = nullptr;                           // the recording thread's dict of mod_state
  PyObject* region_dict = nullptr;                        // ... and of region_state
  unsigned long dicts_ident = 0;                          // that thread
  std::unordered_map<PyObject*, long> ranks;              // code object (held) -> rank
  // The dispatch fast path (attach_dispatch): the capture's plan table, op counter and fallbacks.
  PyObject* plans = nullptr;           // dict: op overload -> Plan (or a marker: declined)
  PyObject* plan_type = nullptr;       // the Plan class
  PyObject* seq_iter = nullptr;        // itertools.count shared with the Python path
  PyObject* declined = nullptr;        // the sentinel dispatch() returns when Python must take the op
  PyObject* set_eval_frame = nullptr;  // Dynamo's frame hook switch, or None
  PyObject* py_record = nullptr;       // Recorder.record (the Python recorder)
  PyObject* internal_error = nullptr;  // Recorder.internal_error
  bool record_ops = true;
  unsigned long last_ident = 0;                           // the thread of the previous op
  PyObject* last_tid = nullptr;                           // ... and its int object (borrowed from tids)
};

PyObject* s_cdata;
PyObject* s_threaded;
PyObject* s_path;
PyObject* s_watch_pos;
PyObject* s_record_copy;
PyObject* s_device;
PyObject* s_accumulate;
PyObject* s_cpu;
PyObject* s_dtype;
PyObject* s_dict;
PyObject* s_d2d;
PyObject* s_h2d;
PyObject* s_d2h;
PyObject* s_p2p;

// A new tuple the cyclic GC never scans: every tuple made here holds only ints, strings, bools, None,
// code objects and other such tuples, so it cannot be part of a cycle; a traced run keeps millions
// of them, and tracked they would make each collection the traced program triggers slower.
PyObject* new_tuple(Py_ssize_t n) {
  PyObject* t = PyTuple_New(n);
  if (t != nullptr && n > 0) PyObject_GC_UnTrack(t);
  return t;
}

PyObject* pack2(PyObject* a, PyObject* b) {
  PyObject* t = new_tuple(2);
  if (t == nullptr) return nullptr;
  Py_INCREF(a);
  Py_INCREF(b);
  PyTuple_SET_ITEM(t, 0, a);
  PyTuple_SET_ITEM(t, 1, b);
  return t;
}

// A vector with room for N items inline: the per-op lists stay off the heap in the common case.
template <typename T, size_t N>
struct Small {
  T inline_[N];
  std::vector<T> heap_;
  size_t n_ = 0;
  void push_back(const T& v) {
    if (n_ < N) {
      inline_[n_++] = v;
      return;
    }
    if (n_ == N) heap_.assign(inline_, inline_ + N);
    heap_.push_back(v);
    ++n_;
  }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T* begin() { return n_ <= N ? inline_ : heap_.data(); }
  T* end() { return begin() + n_; }
  const T* begin() const { return n_ <= N ? inline_ : heap_.data(); }
  const T* end() const { return begin() + n_; }
  T& operator[](size_t i) { return begin()[i]; }
  void clear() {
    n_ = 0;
    heap_.clear();
  }
};

// A small growable flat row (reads, writes, allocs, frees) turned into a tuple at the end.
struct Flat {
  Small<PyObject*, 16> items;  // owned references
  ~Flat() {
    for (PyObject* o : items) Py_XDECREF(o);
  }
  bool push(PyObject* o) {  // steals o
    if (o == nullptr) return false;
    items.push_back(o);
    return true;
  }
  PyObject* tuple(PyObject* empty) {
    if (items.empty()) {
      Py_INCREF(empty);
      return empty;
    }
    PyObject* t = new_tuple((Py_ssize_t)items.size());
    if (t == nullptr) return nullptr;
    for (size_t i = 0; i < items.size(); ++i) PyTuple_SET_ITEM(t, (Py_ssize_t)i, items[i]);
    items.clear();
    return t;
  }
};

// One tensor argument or output, after the plain-tensor check.
struct Seen {
  PyObject* obj;  // borrowed
  c10::TensorImpl* impl;
  c10::StorageImpl* storage;
  long role;  // READ / WRITE / RW; -1 for an output
};

// Where a Python tensor object keeps its TensorImpl pointer (THPVariable's payload: at::Tensor, or
// MaybeOwned<at::Tensor> in older torch), found by calibrate() against Tensor._cdata; -1: ask _cdata.
Py_ssize_t g_impl_offset = -1;
void* g_plain_vptr = nullptr;  // the vtable pointer of c10::TensorImpl itself (set by calibrate)

c10::TensorImpl* impl_from_attr(PyObject* o) {
  PyObject* cd = PyObject_GetAttr(o, s_cdata);
  if (cd == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  auto* impl = static_cast<c10::TensorImpl*>(PyLong_AsVoidPtr(cd));
  Py_DECREF(cd);
  if (impl == nullptr) PyErr_Clear();
  return impl;
}

c10::TensorImpl* impl_of(PyObject* o) {
  if (g_impl_offset >= 0) return *reinterpret_cast<c10::TensorImpl**>(reinterpret_cast<char*>(o) + g_impl_offset);
  return impl_from_attr(o);
}

// calibrate(tensors) -> offset or -1: the payload offset at which every given tensor holds the
// TensorImpl that its _cdata names (checked on several tensors, so a coincidence cannot pass).
PyObject* calibrate(PyObject*, PyObject* tensors) {
  if (!PyTuple_Check(tensors) || PyTuple_GET_SIZE(tensors) < 2) {
    PyErr_SetString(PyExc_TypeError, "calibrate(tuple of at least two tensors)");
    return nullptr;
  }
  g_impl_offset = -1;
  for (Py_ssize_t off = sizeof(PyObject); off <= (Py_ssize_t)sizeof(PyObject) + 3 * (Py_ssize_t)sizeof(void*);
       off += sizeof(void*)) {
    bool all = true;
    for (Py_ssize_t i = 0; all && i < PyTuple_GET_SIZE(tensors); ++i) {
      PyObject* t = PyTuple_GET_ITEM(tensors, i);
      c10::TensorImpl* want = impl_from_attr(t);
      if (want == nullptr || Py_TYPE(t)->tp_basicsize < off + (Py_ssize_t)sizeof(void*)) {
        all = false;
        break;
      }
      all = *reinterpret_cast<c10::TensorImpl**>(reinterpret_cast<char*>(t) + off) == want;
    }
    if (all) {
      g_impl_offset = off;
      break;
    }
  }
  c10::TensorImpl* first = impl_from_attr(PyTuple_GET_ITEM(tensors, 0));
  if (first != nullptr && typeid(*first) == typeid(c10::TensorImpl)) g_plain_vptr = *reinterpret_cast<void**>(first);
  return PyLong_FromSsize_t(g_impl_offset);
}

bool is_tensor(State* s, PyObject* o) {
  return PyType_IsSubtype(Py_TYPE(o), (PyTypeObject*)s->tensor_type);
}

// The TensorImpl of a tensor this file handles, or nullptr (then the whole op goes to Python).
c10::TensorImpl* plain_impl(State* s, PyObject* o, c10::StorageImpl** storage) {
  bool exact = false;
  Py_ssize_t n = PyTuple_GET_SIZE(s->plain_types);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if ((PyObject*)Py_TYPE(o) == PyTuple_GET_ITEM(s->plain_types, i)) {
      exact = true;
      break;
    }
  }
  if (!exact) return nullptr;
  c10::TensorImpl* impl = impl_of(o);
  if (impl == nullptr) return nullptr;
  // Exactly the dense TensorImpl (not batched, functional, nested, sparse, opaque...), strided, with
  // concrete sizes and a storage.
  // Exactly the dense TensorImpl: the vtable of the calibrated plain tensors (fast), else RTTI.
  if (*reinterpret_cast<void* const*>(impl) != g_plain_vptr && typeid(*impl) != typeid(c10::TensorImpl)) return nullptr;
  if (impl->layout() != c10::kStrided || impl->has_symbolic_sizes_strides() || !impl->has_storage()) return nullptr;
  try {
    c10::StorageImpl* st = impl->storage().unsafeGetStorageImpl();
    if (st == nullptr || st->sym_nbytes().is_heap_allocated()) return nullptr;
    *storage = st;
  } catch (...) {
    return nullptr;
  }
  return impl;
}

// (offset, nbytes, dense) of a tensor's byte range: capture/storages.py access() and span().
void byte_range(c10::TensorImpl* impl, bool dense_ok, long long* off, long long* nb, bool* dense) {
  long long es = (long long)impl->itemsize();
  *off = (long long)impl->storage_offset() * es;
  if (impl->is_contiguous()) {
    *nb = (long long)impl->numel() * es;
    *dense = dense_ok;
    return;
  }
  if (impl->numel() == 0) {
    *nb = 0;
    *dense = dense_ok;
    return;
  }
  auto sizes = impl->sizes();
  auto strides = impl->strides();
  long long last = 0;
  std::vector<std::pair<long long, long long>> dims;
  for (size_t i = 0; i < sizes.size(); ++i) {
    last += (sizes[i] - 1) * strides[i];
    if (sizes[i] != 1) dims.emplace_back(strides[i], sizes[i]);
  }
  std::sort(dims.begin(), dims.end());
  long long expect = 1;
  bool d = true;
  for (auto& [st, sz] : dims) {
    if (st != expect) {
      d = false;
      break;
    }
    expect *= sz;
  }
  *nb = (last + 1) * es;
  *dense = d && dense_ok;
}

bool push_access(Flat& flat, PyObject* sid, c10::TensorImpl* impl, bool dense_ok) {
  long long off, nb;
  bool dense;
  byte_range(impl, dense_ok, &off, &nb, &dense);
  Py_INCREF(sid);
  return flat.push(sid) && flat.push(PyLong_FromLongLong(off)) && flat.push(PyLong_FromLongLong(nb)) &&
         flat.push(PyBool_FromLong(dense));
}

bool expired_handle(PyObject* handle) {
  auto* p = static_cast<c10::StorageImpl*>(PyLong_AsVoidPtr(handle));
  return c10::raw::weak_intrusive_ptr::use_count(p) == 0;
}

// str(getattr(o, attr)), cached under ``key`` (the cache owns it): device and dtype names repeat.
template <typename Key>
PyObject* cached_str(std::unordered_map<Key, PyObject*>& cache, Key key, PyObject* o, PyObject* attr) {
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  PyObject* v = PyObject_GetAttr(o, attr);
  if (v == nullptr) return nullptr;
  PyObject* name = PyObject_Str(v);
  Py_DECREF(v);
  if (name == nullptr) return nullptr;
  cache[key] = name;
  return name;
}

// Device name of a new storage: "cpu", else str(t.device), cached per device. Borrowed.
PyObject* device_name(State* s, PyObject* o, c10::TensorImpl* impl) {
  if (impl->is_cpu()) return s_cpu;
  c10::Device d = impl->device();
  long long key = ((long long)(int)d.type() << 16) | (long long)(d.index() & 0xffff);
  return cached_str(s->device_names, key, o, s_device);
}

// Register a storage not seen alive before (StorageTable.new, one thread). New reference to its id.
PyObject* register_storage(State* s, PyObject* cd, c10::StorageImpl* st, PyObject* o, c10::TensorImpl* impl) {
  PyObject* name = device_name(s, o, impl);
  if (name == nullptr) return nullptr;
  PyObject* sid = PyLong_FromSsize_t(PyList_GET_SIZE(s->weak));
  if (sid == nullptr) return nullptr;
  c10::StorageImpl* w = c10::raw::intrusive_ptr::make_weak(st);
  PyObject* handle = PyLong_FromVoidPtr(w);
  PyObject* nb = PyLong_FromSize_t(st->nbytes());
  bool ok = handle != nullptr && nb != nullptr && PyList_Append(s->weak, handle) == 0;
  if (!ok) {
    if (handle == nullptr) c10::raw::weak_intrusive_ptr::decref(w);
    Py_XDECREF(handle);
    Py_XDECREF(nb);
    Py_DECREF(sid);
    return nullptr;
  }
  Py_DECREF(handle);
  ok = PyList_Append(s->device, name) == 0 && PyList_Append(s->nbytes, nb) == 0 &&
       PyDict_SetItem(s->by_cdata, cd, sid) == 0;
  Py_DECREF(nb);
  if (!ok) {
    Py_DECREF(sid);
    return nullptr;
  }
  return sid;
}

// Add ``sid`` to the op's frees unless it was reported before. Returns false on error.
bool note_freed(State* s, PyObject* sid, Flat& frees) {
  int has = PySet_Contains(s->freed, sid);
  if (has < 0) return false;
  if (has) return true;
  if (PySet_Add(s->freed, sid) < 0) return false;
  Py_INCREF(sid);
  return frees.push(sid);
}

// Recorder._check_watch: watched storages found freed (16 checked, every 8th op).
bool check_watch(State* s, Flat& frees) {
  PyObject* w = s->watch;
  PyObject* pos_obj = PyObject_GetAttr(s->recorder, s_watch_pos);
  if (pos_obj == nullptr) return false;
  Py_ssize_t pos = PyLong_AsSsize_t(pos_obj);
  Py_DECREF(pos_obj);
  if (pos == -1 && PyErr_Occurred()) return false;
  Py_ssize_t start_pos = pos;
  Py_ssize_t rounds = std::min<Py_ssize_t>(16, PyList_GET_SIZE(w));
  for (Py_ssize_t k = 0; k < rounds; ++k) {
    Py_ssize_t n = PyList_GET_SIZE(w);
    Py_ssize_t i = pos % n;
    PyObject* sid = PyList_GET_ITEM(w, i);
    Py_ssize_t idx = PyLong_AsSsize_t(sid);
    if (idx == -1 && PyErr_Occurred()) return false;
    if (expired_handle(PyList_GET_ITEM(s->weak, idx))) {
      Py_INCREF(sid);
      PyObject* last = PyList_GET_ITEM(w, n - 1);
      Py_INCREF(last);
      PyList_SetItem(w, i, last);  // steals last
      if (PyList_SetSlice(w, n - 1, n, nullptr) < 0 || !note_freed(s, sid, frees)) {
        Py_DECREF(sid);
        return false;
      }
      Py_DECREF(sid);
      if (PyList_GET_SIZE(w) == 0) break;
    } else {
      pos = i + 1;
    }
  }
  if (pos != start_pos) {
    PyObject* p = PyLong_FromSsize_t(pos);
    if (p == nullptr) return false;
    int r = PyObject_SetAttr(s->recorder, s_watch_pos, p);
    Py_DECREF(p);
    if (r < 0) return false;
  }
  return true;
}

long rank_of_py(State* s, PyObject* code);

// The rank of a code object's file (SiteChooser.rank_code, cached in its dict and here). -1 on error.
long rank_of(State* s, PyObject* code) {
  auto it = s->ranks.find(code);
  if (it != s->ranks.end()) return it->second;
  long r = rank_of_py(s, code);
  if (r >= 0) {
    Py_INCREF(code);  // held by the cache: its address cannot be reused meanwhile
    s->ranks.emplace(code, r);
  }
  return r;
}

long rank_of_py(State* s, PyObject* code) {
  PyObject* key = PyLong_FromVoidPtr(code);
  if (key == nullptr) return -1;
  PyObject* e = PyDict_GetItemWithError(s->site_codes, key);  // borrowed
  Py_DECREF(key);
  if (e != nullptr && PyTuple_Check(e) && PyTuple_GET_ITEM(e, 0) == code) return PyLong_AsLong(PyTuple_GET_ITEM(e, 1));
  if (PyErr_Occurred()) return -1;
  PyObject* r = PyObject_CallOneArg(s->rank_code, code);
  if (r == nullptr) return -1;
  long v = PyLong_AsLong(r);
  Py_DECREF(r);
  return v;
}

// SiteChooser.live: the innermost frame of the wanted rank, else the innermost candidate, else None.
// New reference (Py_None for no site), nullptr on error.
PyObject* live_site(State* s, PyFrameObject* frame) {
  PyFrameObject* fallback = nullptr;
  PyFrameObject* f = frame;
  Py_XINCREF(f);
  for (int depth = 0; f != nullptr && depth < MAX_DEPTH; ++depth) {
    PyCodeObject* code = PyFrame_GetCode(f);
    long r = rank_of(s, (PyObject*)code);
    Py_DECREF(code);
    if (r < 0 && PyErr_Occurred()) {
      Py_DECREF(f);
      Py_XDECREF(fallback);
      return nullptr;
    }
    if (r >= s->wanted) {
      Py_XDECREF(fallback);
      return (PyObject*)f;
    }
    if (r && fallback == nullptr) {
      fallback = f;
      Py_INCREF(fallback);
    }
    PyFrameObject* back = PyFrame_GetBack(f);
    Py_DECREF(f);
    f = back;
  }
  Py_XDECREF(f);
  if (fallback != nullptr) return (PyObject*)fallback;
  Py_RETURN_NONE;
}

// RawLog.site: the interned index of a live frame's position. New reference.
PyObject* write_site(State* s, PyFrameObject* f) {
  PyCodeObject* code = PyFrame_GetCode(f);
  PyObject* pos = PyLong_FromLong(-1 - PyFrame_GetLasti(f));
  PyObject* key = new_tuple(2);
  if (pos == nullptr || key == nullptr) {
    Py_DECREF(code);
    Py_XDECREF(pos);
    Py_XDECREF(key);
    return nullptr;
  }
  PyTuple_SET_ITEM(key, 0, PyLong_FromVoidPtr(code));
  Py_INCREF(pos);
  PyTuple_SET_ITEM(key, 1, pos);
  PyObject* i = PyDict_GetItemWithError(s->site_ids, key);
  if (i != nullptr) {
    Py_INCREF(i);
  } else if (!PyErr_Occurred()) {
    i = PyLong_FromSsize_t(PyList_GET_SIZE(s->sites));
    PyObject* entry = pack2((PyObject*)code, pos);
    if (i == nullptr || entry == nullptr || PyDict_SetItem(s->site_ids, key, i) < 0 ||
        PyList_Append(s->sites, entry) < 0) {
      Py_XDECREF(i);
      i = nullptr;
    }
    Py_XDECREF(entry);
  }
  Py_DECREF(key);
  Py_DECREF(pos);
  Py_DECREF(code);
  return i;
}

// The module and region paths live in threading.local objects (one dict per thread); reading them
// through the local costs ~90 ns each, so the recording thread's dicts are fetched once and read
// directly (only one thread records here: see record()).
bool fetch_thread_dicts(State* s, unsigned long ident) {
  Py_CLEAR(s->mod_dict);
  Py_CLEAR(s->region_dict);
  if (s->mod_state != Py_None) {
    s->mod_dict = PyObject_GetAttr(s->mod_state, s_dict);
    if (s->mod_dict == nullptr || !PyDict_Check(s->mod_dict)) {
      PyErr_Clear();
      Py_CLEAR(s->mod_dict);
    }
  }
  s->region_dict = PyObject_GetAttr(s->region_state, s_dict);
  if (s->region_dict == nullptr || !PyDict_Check(s->region_dict)) {
    PyErr_Clear();
    Py_CLEAR(s->region_dict);
    s->region_dict = PyDict_New();  // never holds "path": path_of falls back to the attribute
    if (s->region_dict == nullptr) return false;
  }
  s->dicts_ident = ident;
  return true;
}

// obj.path, read from its per-thread dict when it is there. New reference.
PyObject* path_of(PyObject* dict, PyObject* obj) {
  if (obj == Py_None) Py_RETURN_NONE;
  if (dict != nullptr) {
    PyObject* v = PyDict_GetItemWithError(dict, s_path);
    if (v != nullptr) {
      Py_INCREF(v);
      return v;
    }
    if (PyErr_Occurred()) return nullptr;
  }
  return PyObject_GetAttr(obj, s_path);
}

void state_free(PyObject* capsule) {
  auto* s = static_cast<State*>(PyCapsule_GetPointer(capsule, "copyhunt.native_recorder.State"));
  if (s == nullptr) return;
  PyObject** owned[] = {&s->by_cdata, &s->weak,     &s->device,      &s->nbytes,       &s->table,
                        &s->freed,    &s->watch,    &s->recorder,    &s->site_codes,   &s->rank_code,
                        &s->sites,    &s->site_ids, &s->append_op,   &s->tids,         &s->mod_state,
                        &s->region_state, &s->in_graph, &s->tensor_type, &s->plain_types, &s->empty,
                        &s->watched, &s->copies, &s->stacks, &s->stack_ids};
  for (PyObject** p : owned) Py_CLEAR(*p);
  for (auto& kv : s->device_names) Py_DECREF(kv.second);
  for (auto& kv : s->dtype_names) Py_DECREF(kv.second);
  for (auto& kv : s->ranks) Py_DECREF(kv.first);
  Py_XDECREF(s->mod_dict);
  Py_XDECREF(s->region_dict);
  PyObject** fast[] = {&s->plans, &s->plan_type, &s->seq_iter, &s->declined, &s->set_eval_frame, &s->py_record,
                       &s->internal_error};
  for (PyObject** p : fast) Py_CLEAR(*p);
  delete s;
}

// make_state(by_cdata, weak, device, nbytes, table, freed, watch, recorder, site_codes, wanted,
//            rank_code, sites, site_ids, append_op, tids, mod_state, region_state, in_graph,
//            tensor_type, plain_types, watched, copies, stacks, stack_ids, stack_depth) -> capsule
PyObject* make_state(PyObject*, PyObject* args) {
  auto* s = new State();
  if (!PyArg_ParseTuple(args, "O!O!O!O!OO!O!OO!lOO!O!OO!OOOOO!O!O!O!O!l:make_state", &PyDict_Type, &s->by_cdata,
                        &PyList_Type, &s->weak, &PyList_Type, &s->device, &PyList_Type, &s->nbytes, &s->table,
                        &PySet_Type, &s->freed, &PyList_Type, &s->watch, &s->recorder, &PyDict_Type,
                        &s->site_codes, &s->wanted, &s->rank_code, &PyList_Type, &s->sites, &PyDict_Type,
                        &s->site_ids, &s->append_op, &PyDict_Type, &s->tids, &s->mod_state, &s->region_state,
                        &s->in_graph, &s->tensor_type, &PyTuple_Type, &s->plain_types, &PySet_Type, &s->watched,
                        &PyList_Type, &s->copies, &PyList_Type, &s->stacks, &PyDict_Type, &s->stack_ids,
                        &s->stack_depth)) {
    delete s;
    return nullptr;
  }
  PyObject** owned[] = {&s->by_cdata, &s->weak,     &s->device,      &s->nbytes,       &s->table,
                        &s->freed,    &s->watch,    &s->recorder,    &s->site_codes,   &s->rank_code,
                        &s->sites,    &s->site_ids, &s->append_op,   &s->tids,         &s->mod_state,
                        &s->region_state, &s->in_graph, &s->tensor_type, &s->plain_types,
                        &s->watched,  &s->copies,   &s->stacks,      &s->stack_ids};
  for (PyObject** p : owned) Py_INCREF(*p);
  s->empty = PyTuple_New(0);
  PyObject* cap = PyCapsule_New(s, "copyhunt.native_recorder.State", state_free);
  if (cap == nullptr) {
    for (PyObject** p : owned) Py_DECREF(*p);
    Py_XDECREF(s->empty);
    delete s;
  }
  return cap;
}


// str(t.dtype), cached per scalar type. Borrowed.
PyObject* dtype_name(State* s, PyObject* o, c10::TensorImpl* impl) {
  return cached_str(s->dtype_names, (int)impl->dtype().toScalarType(), o, s_dtype);
}

// Recorder._watch_storage.
bool watch_storage(State* s, PyObject* sid) {
  int has = PySet_Contains(s->watched, sid);
  if (has < 0) return false;
  if (has) return true;
  return PySet_Add(s->watched, sid) == 0 && PyList_Append(s->watch, sid) == 0;
}

// RawLog.stack: the interned index of the stack from ``site`` (up to stack_depth frames). New reference.
PyObject* write_stack(State* s, PyFrameObject* site) {
  std::vector<PyFrameObject*> frames;  // owned
  PyFrameObject* f = site;
  Py_XINCREF(f);
  while (f != nullptr && (long)frames.size() < s->stack_depth) {
    frames.push_back(f);
    f = PyFrame_GetBack(f);
  }
  Py_XDECREF(f);
  PyObject* result = nullptr;
  PyObject* key = new_tuple(2 * (Py_ssize_t)frames.size());
  std::vector<PyObject*> codes(frames.size(), nullptr);
  std::vector<PyObject*> poss(frames.size(), nullptr);
  bool ok = key != nullptr;
  for (size_t i = 0; ok && i < frames.size(); ++i) {
    codes[i] = (PyObject*)PyFrame_GetCode(frames[i]);
    poss[i] = PyLong_FromLong(-1 - PyFrame_GetLasti(frames[i]));
    PyObject* id = PyLong_FromVoidPtr(codes[i]);
    ok = poss[i] != nullptr && id != nullptr;
    if (!ok) {
      Py_XDECREF(id);
      break;
    }
    PyTuple_SET_ITEM(key, 2 * (Py_ssize_t)i, id);
    Py_INCREF(poss[i]);
    PyTuple_SET_ITEM(key, 2 * (Py_ssize_t)i + 1, poss[i]);
  }
  if (ok) {
    PyObject* i = PyDict_GetItemWithError(s->stack_ids, key);
    if (i != nullptr) {
      Py_INCREF(i);
      result = i;
    } else if (!PyErr_Occurred()) {
      PyObject* entry = new_tuple((Py_ssize_t)frames.size());
      PyObject* idx = PyLong_FromSsize_t(PyList_GET_SIZE(s->stacks));
      bool fine = entry != nullptr && idx != nullptr;
      for (size_t k = 0; fine && k < frames.size(); ++k) {
        PyObject* pair = pack2(codes[k], poss[k]);
        if (pair == nullptr) {
          fine = false;
          break;
        }
        PyTuple_SET_ITEM(entry, (Py_ssize_t)k, pair);
      }
      if (fine && PyDict_SetItem(s->stack_ids, key, idx) == 0 && PyList_Append(s->stacks, entry) == 0) {
        result = idx;
        idx = nullptr;
      }
      Py_XDECREF(idx);
      Py_XDECREF(entry);
    }
  }
  Py_XDECREF(key);
  for (size_t i = 0; i < frames.size(); ++i) {
    Py_XDECREF(codes[i]);
    Py_XDECREF(poss[i]);
    Py_DECREF(frames[i]);
  }
  return result;
}

// The id of a tensor's storage (new reference), registering it when it is new or its address held a
// storage now dead (that dead id goes to ``frees`` when given). *was_new says whether it registered.
PyObject* storage_id(State* s, const Seen& t, bool* was_new, Flat* frees);

// copy_kind(src, dst) of capture/recording.py on two devices.
PyObject* copy_kind(c10::Device src, c10::Device dst) {
  if (src == dst) return s_d2d;
  bool s_host = src.is_cpu(), d_host = dst.is_cpu();
  if (s_host && !d_host) return s_h2d;
  if (d_host && !s_host) return s_d2h;
  return s_p2p;
}

// Recorder._record_copy for a copy whose tensors are all plain: 1 recorded, 0 declined (nothing
// touched: the caller runs the Python method), -1 error.
int record_copy(State* s, PyObject* seq, PyObject* name, PyObject* facts, PyFrameObject* frame, PyObject* module,
                PyObject* region, PyObject* tid, PyObject* in_graph) {
  if (!PyTuple_Check(facts) || PyTuple_GET_SIZE(facts) < 6) return 0;
  PyObject* srcs_obj = PyTuple_GET_ITEM(facts, 0);
  PyObject* dst_obj = PyTuple_GET_ITEM(facts, 1);
  if (!PyTuple_Check(srcs_obj) || !is_tensor(s, dst_obj)) return 0;
  int to_host = PyObject_IsTrue(PyTuple_GET_ITEM(facts, 5));
  if (to_host < 0) return -1;
  Seen dst{dst_obj, nullptr, nullptr, -1};
  dst.impl = plain_impl(s, dst_obj, &dst.storage);
  if (dst.impl == nullptr) return 0;
  std::vector<Seen> srcs;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(srcs_obj); ++i) {
    PyObject* o = PyTuple_GET_ITEM(srcs_obj, i);
    if (!is_tensor(s, o)) continue;
    Seen t{o, nullptr, nullptr, -1};
    t.impl = plain_impl(s, o, &t.storage);
    if (t.impl == nullptr) return 0;
    srcs.push_back(t);
  }
  // From here on the copy is recorded here.
  PyObject* nbytes = PyNumber_Long(PyTuple_GET_ITEM(facts, 2));
  if (nbytes == nullptr) return -1;
  int noop = PyObject_IsTrue(PyTuple_GET_ITEM(facts, 3));
  int exact = PyObject_IsTrue(PyTuple_GET_ITEM(facts, 4));
  std::vector<PyObject*> owned;  // released at the end
  owned.push_back(nbytes);
  auto done = [&](int r) {
    for (PyObject* o : owned) Py_XDECREF(o);
    return r;
  };
  if (noop < 0 || exact < 0) return done(-1);
  PyObject* dst_sid = Py_None;
  if (!to_host) {
    bool was_new;
    dst_sid = storage_id(s, dst, &was_new, nullptr);
    if (dst_sid == nullptr) return done(-1);
    owned.push_back(dst_sid);
  }
  PyObject* src_sids = new_tuple((Py_ssize_t)srcs.size());
  if (src_sids == nullptr) return done(-1);
  owned.push_back(src_sids);
  for (size_t i = 0; i < srcs.size(); ++i) {
    bool was_new;
    PyObject* sid = storage_id(s, srcs[i], &was_new, nullptr);
    if (sid == nullptr) return done(-1);
    PyTuple_SET_ITEM(src_sids, (Py_ssize_t)i, sid);
  }
  PyObject* layouts = Py_None;
  if (srcs.size() > 1) {
    layouts = new_tuple((Py_ssize_t)srcs.size());
    if (layouts == nullptr) return done(-1);
    owned.push_back(layouts);
    for (size_t i = 0; i < srcs.size(); ++i) {
      PyObject* dn = dtype_name(s, srcs[i].obj, srcs[i].impl);
      if (dn == nullptr) return done(-1);
      PyObject* pair = pack2(dn, srcs[i].impl->is_contiguous() ? Py_True : Py_False);
      if (pair == nullptr) return done(-1);
      PyTuple_SET_ITEM(layouts, (Py_ssize_t)i, pair);
    }
  }
  if (dst_sid != Py_None && !watch_storage(s, dst_sid)) return done(-1);
  for (size_t i = 0; i < srcs.size(); ++i) {
    if (!watch_storage(s, PyTuple_GET_ITEM(src_sids, (Py_ssize_t)i))) return done(-1);
  }
  const Seen* src = srcs.empty() ? nullptr : &srcs[0];
  PyObject *kind, *src_name, *dst_name;
  if (dst.impl->is_cpu() && (src == nullptr || src->impl->is_cpu())) {
    kind = s_d2d;
    src_name = dst_name = s_cpu;
  } else {
    c10::Device dd = dst.impl->device();
    c10::Device sd = src != nullptr ? src->impl->device() : dd;
    kind = copy_kind(sd, dd);
    dst_name = device_name(s, dst.obj, dst.impl);
    src_name = src != nullptr ? device_name(s, src->obj, src->impl) : dst_name;
    if (dst_name == nullptr || src_name == nullptr) return done(-1);
  }
  auto sizes = dst.impl->sizes();
  PyObject* shape = new_tuple((Py_ssize_t)sizes.size());
  if (shape == nullptr) return done(-1);
  owned.push_back(shape);
  for (size_t i = 0; i < sizes.size(); ++i) {
    PyObject* v = PyLong_FromLongLong(sizes[i]);
    if (v == nullptr) return done(-1);
    PyTuple_SET_ITEM(shape, (Py_ssize_t)i, v);
  }
  PyObject* dtype = dtype_name(s, dst.obj, dst.impl);
  if (dtype == nullptr) return done(-1);
  PyObject* src_dtype = Py_None;
  PyObject* src_contig = Py_None;
  if (src != nullptr) {
    src_dtype = dtype_name(s, src->obj, src->impl);
    if (src_dtype == nullptr) return done(-1);
    src_contig = src->impl->is_contiguous() ? Py_True : Py_False;
  }
  PyObject* stack = write_stack(s, frame);
  if (stack == nullptr) return done(-1);
  owned.push_back(stack);
  PyObject* first_src = srcs.empty() ? Py_None : PyTuple_GET_ITEM(src_sids, 0);
  PyObject* row = PyTuple_Pack(22, seq, name, kind, nbytes, noop ? Py_True : Py_False, src_name, dst_name, shape,
                               dtype, src_dtype, src_contig, dst.impl->is_contiguous() ? Py_True : Py_False, stack,
                               module, region, tid, in_graph, first_src, dst_sid, src_sids,
                               exact ? Py_True : Py_False, layouts);
  if (row == nullptr) return done(-1);
  PyObject_GC_UnTrack(row);
  owned.push_back(row);
  if (PyList_Append(s->copies, row) < 0) return done(-1);
  return done(1);
}

// Append the tensors among ``items`` (others are skipped) with their role; false at the first one this
// file does not handle (the caller declines the op).
template <size_t N>
bool see_tensors(State* s, PyObject* const* items, Py_ssize_t n, long role, Small<Seen, N>& into) {
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* t = items[i];
    if (!is_tensor(s, t)) continue;
    c10::StorageImpl* st = nullptr;
    c10::TensorImpl* impl = plain_impl(s, t, &st);
    if (impl == nullptr) return false;
    into.push_back({t, impl, st, role});
  }
  return true;
}

// Collect the op's tensors (outputs unless the plan skips them, then each planned argument) and
// check every one is plain. False: decline (nothing touched). -1 on error.
int collect(State* s, PyObject* plan, PyObject* const* args, Py_ssize_t nargs, PyObject* kwargs, PyObject* out,
            Small<Seen, 4>& outs, Small<Seen, 8>& ins) {
  if (!PyObject_IsTrue(PyTuple_GET_ITEM(plan, PLAN_SKIP_OUTPUTS))) {
    PyObject* const* items = &out;
    Py_ssize_t n = 1;
    if (PyTuple_CheckExact(out)) {
      items = &PyTuple_GET_ITEM(out, 0);
      n = PyTuple_GET_SIZE(out);
    } else if (PyList_CheckExact(out)) {
      items = PySequence_Fast_ITEMS(out);
      n = PyList_GET_SIZE(out);
    }
    if (!see_tensors(s, items, n, -1, outs)) return 0;
  }
  PyObject* specs = PyTuple_GET_ITEM(plan, PLAN_ARGS);
  PyObject* acc_pos = PyTuple_GET_ITEM(plan, PLAN_ACCUMULATE);
  for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(specs); ++k) {
    PyObject* spec = PyTuple_GET_ITEM(specs, k);
    Py_ssize_t pos = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 0));
    long role = PyLong_AsLong(PyTuple_GET_ITEM(spec, 2));
    PyObject* a;
    if (pos < nargs) {
      a = args[pos];
    } else {
      a = kwargs != nullptr ? PyDict_GetItemWithError(kwargs, PyTuple_GET_ITEM(spec, 1)) : nullptr;
      if (a == nullptr && PyErr_Occurred()) return -1;
    }
    if (a == nullptr || a == Py_None) continue;
    if (role == WRITE && acc_pos != Py_None) {
      Py_ssize_t ap = PyLong_AsSsize_t(acc_pos);
      PyObject* flag;
      if (ap < nargs) {
        flag = args[ap];
      } else {
        flag = kwargs != nullptr ? PyDict_GetItemWithError(kwargs, s_accumulate) : nullptr;
        if (flag == nullptr && PyErr_Occurred()) return -1;
      }
      if (flag != nullptr) {
        int t = PyObject_IsTrue(flag);
        if (t < 0) return -1;
        if (t) role = RW;
      }
    }
    PyObject* const* items = &a;
    Py_ssize_t n = 1;
    if (is_tensor(s, a)) {
    } else if (PyList_CheckExact(a) || PyTuple_CheckExact(a)) {
      items = PySequence_Fast_ITEMS(a);
      n = PySequence_Fast_GET_SIZE(a);
    } else {
      continue;
    }
    if (!see_tensors(s, items, n, role, ins)) return 0;
  }
  return 1;
}

PyObject* storage_id(State* s, const Seen& t, bool* was_new, Flat* frees) {
  PyObject* cd = PyLong_FromVoidPtr(t.storage);
  if (cd == nullptr) return nullptr;
  *was_new = false;
  PyObject* sid = PyDict_GetItemWithError(s->by_cdata, cd);  // borrowed
  if (sid == nullptr && PyErr_Occurred()) {
    Py_DECREF(cd);
    return nullptr;
  }
  if (sid != nullptr) {
    if (!expired_handle(PyList_GET_ITEM(s->weak, PyLong_AsSsize_t(sid)))) {
      Py_INCREF(sid);
      Py_DECREF(cd);
      return sid;
    }
    // A dead storage's address, reused: report the dead id once (op rows only; copies do not).
    if (frees != nullptr && !note_freed(s, sid, *frees)) {
      Py_DECREF(cd);
      return nullptr;
    }
  }
  PyObject* fresh = register_storage(s, cd, t.storage, t.obj, t.impl);
  Py_DECREF(cd);
  if (fresh != nullptr) *was_new = true;
  return fresh;
}

// Record one op: 1 recorded here, 0 declined (nothing touched: the Python recorder takes it), -1 error.
int record_op(State* s, PyObject* seq, PyObject* plan, PyObject* op_args, PyObject* kwargs, PyObject* out) {
  if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) < 6 || !PyTuple_Check(op_args) ||
      (kwargs != nullptr && !PyDict_Check(kwargs))) {
    return 0;
  }
  // A second recording thread: the Python recorder's lock-protected table is the only writer.
  PyObject* threaded = PyObject_GetAttr(s->table, s_threaded);
  if (threaded == nullptr) return -1;
  int thr = PyObject_IsTrue(threaded);
  Py_DECREF(threaded);
  if (thr != 0) {
    if (thr < 0) return -1;
    return 0;
  }

  Small<Seen, 4> outs;
  Small<Seen, 8> ins;
  int ok = collect(s, plan, &PyTuple_GET_ITEM(op_args, 0), PyTuple_GET_SIZE(op_args), kwargs, out, outs, ins);
  if (ok < 0) return -1;
  if (ok == 0) return 0;

  Flat reads, writes, allocs, frees;
  Small<PyObject*, 4> out_sids;  // owned
  struct Release {
    Small<PyObject*, 4>& v;
    ~Release() {
      for (PyObject* o : v) Py_DECREF(o);
    }
  } release_out{out_sids};

  // Outputs: a storage alive and known is (a view of) an input; a new one is allocated and written.
  for (const Seen& o : outs) {
    bool was_new;
    PyObject* sid = storage_id(s, o, &was_new, &frees);
    if (sid == nullptr) return -1;
    out_sids.push_back(sid);
    if (!was_new) continue;
    Py_INCREF(sid);
    if (!allocs.push(sid) || !push_access(writes, sid, o.impl, true)) return -1;
  }

  bool partial = PyObject_IsTrue(PyTuple_GET_ITEM(plan, PLAN_PARTIAL)) == 1;
  for (const Seen& t : ins) {
    bool was_new;
    PyObject* sid = storage_id(s, t, &was_new, &frees);
    if (sid == nullptr) return -1;
    bool fine = true;
    if (t.role == READ) {
      bool alias = false;
      for (PyObject* o : out_sids) {
        if (PyObject_RichCompareBool(o, sid, Py_EQ) == 1) {
          alias = true;
          break;
        }
      }
      if (!alias) fine = push_access(reads, sid, t.impl, true);
    } else if (t.role == WRITE) {
      fine = push_access(writes, sid, t.impl, !partial);
    } else {
      fine = push_access(reads, sid, t.impl, !partial) && push_access(writes, sid, t.impl, !partial);
    }
    Py_DECREF(sid);
    if (!fine) return -1;
  }

  long long seq_v = PyLong_AsLongLong(seq);
  if (seq_v == -1 && PyErr_Occurred()) return -1;
  if (!(seq_v & 7) && PyList_GET_SIZE(s->watch) > 0 && !check_watch(s, frees)) return -1;

  // The site: the frame that called the mode's __torch_dispatch__ (sys._getframe(1) there).
  PyFrameObject* dispatch_frame = PyEval_GetFrame();  // borrowed: __torch_dispatch__'s own frame
  PyFrameObject* frame = dispatch_frame != nullptr ? PyFrame_GetBack(dispatch_frame) : nullptr;  // new
  PyObject* site_frame;
  if (frame == nullptr) {
    site_frame = Py_None;
    Py_INCREF(site_frame);
  } else {
    site_frame = live_site(s, frame);
    if (site_frame == nullptr) {
      Py_DECREF(frame);
      return -1;
    }
  }
  PyObject* site;
  if (site_frame == Py_None) {
    site = Py_None;
    Py_INCREF(site);
  } else {
    site = write_site(s, (PyFrameObject*)site_frame);
  }
  int result = -1;
  PyObject *module = nullptr, *region = nullptr, *tid = nullptr, *in_graph = nullptr, *is_copy = Py_False;
  PyObject* row = nullptr;
  Py_INCREF(is_copy);
  do {
    if (site == nullptr) break;
    unsigned long ident = PyThread_get_thread_ident();
    if (s->last_tid != nullptr && ident == s->last_ident) {
      tid = s->last_tid;
    } else {
      PyObject* key = PyLong_FromUnsignedLong(ident);
      if (key == nullptr) break;
      tid = PyDict_SetDefault(s->tids, key, key);  // borrowed: tids keeps it
      Py_DECREF(key);
      if (tid == nullptr) break;
      s->last_ident = ident;
      s->last_tid = tid;
    }
    Py_INCREF(tid);
    if (ident != s->dicts_ident || s->region_dict == nullptr) {
      if (!fetch_thread_dicts(s, ident)) break;
    }
    module = path_of(s->mod_dict, s->mod_state);
    if (module == nullptr) break;
    region = path_of(s->region_dict, s->region_state);
    if (region == nullptr) break;
    if (s->in_graph == Py_None) {
      in_graph = Py_False;
      Py_INCREF(in_graph);
    } else {
      PyObject* r = PyObject_CallNoArgs(s->in_graph);
      if (r == nullptr) break;
      int t = PyObject_IsTrue(r);
      Py_DECREF(r);
      if (t < 0) break;
      in_graph = t ? Py_True : Py_False;
      Py_INCREF(in_graph);
    }
    PyObject* copy_fn = PyTuple_GET_ITEM(plan, PLAN_COPY_FN);
    if (copy_fn != Py_None) {
      PyObject* kw = kwargs;
      PyObject* tmp_kw = nullptr;
      if (kw == nullptr) kw = tmp_kw = PyDict_New();
      if (kw == nullptr) break;
      PyObject* facts = PyObject_CallFunctionObjArgs(copy_fn, op_args, kw, out, nullptr);
      bool fail = facts == nullptr;
      if (!fail && facts != Py_None) {
        Py_SETREF(is_copy, Py_True);
        Py_INCREF(is_copy);
        PyObject* where = site_frame != Py_None ? site_frame : (PyObject*)frame;
        int done = record_copy(s, seq, PyTuple_GET_ITEM(plan, PLAN_NAME), facts, (PyFrameObject*)where, module,
                               region, tid, in_graph);
        if (done == 0) {  // a tensor the compiled path does not handle: the Python method records it
          PyObject* r = PyObject_CallMethodObjArgs(s->recorder, s_record_copy, seq, PyTuple_GET_ITEM(plan, PLAN_NAME),
                                                   facts, where, module, region, tid, in_graph, nullptr);
          fail = r == nullptr;
          Py_XDECREF(r);
        } else {
          fail = done < 0;
        }
      }
      Py_XDECREF(facts);
      Py_XDECREF(tmp_kw);
      if (fail) break;
    }
    PyObject* r_t = reads.tuple(s->empty);
    PyObject* w_t = writes.tuple(s->empty);
    PyObject* a_t = allocs.tuple(s->empty);
    PyObject* f_t = frees.tuple(s->empty);
    if (r_t == nullptr || w_t == nullptr || a_t == nullptr || f_t == nullptr) {
      Py_XDECREF(r_t);
      Py_XDECREF(w_t);
      Py_XDECREF(a_t);
      Py_XDECREF(f_t);
      break;
    }
    row = new_tuple(12);
    if (row == nullptr) {
      Py_DECREF(r_t);
      Py_DECREF(w_t);
      Py_DECREF(a_t);
      Py_DECREF(f_t);
      break;
    }
    // OP_FIELDS order (capture/raw.py); the four access tuples are new references, the rest borrowed.
    PyObject* items[12] = {seq, PyTuple_GET_ITEM(plan, PLAN_NAME), r_t, w_t, a_t, f_t, site, module, region, tid,
                           is_copy, in_graph};
    for (Py_ssize_t k = 0; k < 12; ++k) {
      if (k < 2 || k > 5) Py_INCREF(items[k]);
      PyTuple_SET_ITEM(row, k, items[k]);
    }
    PyObject* r = PyObject_CallOneArg(s->append_op, row);
    if (r == nullptr) break;
    Py_DECREF(r);
    result = 1;
  } while (false);
  Py_XDECREF(row);
  Py_XDECREF(site);
  Py_XDECREF(site_frame);
  Py_XDECREF(frame);
  Py_XDECREF(module);
  Py_XDECREF(region);
  Py_XDECREF(tid);
  Py_XDECREF(in_graph);
  Py_XDECREF(is_copy);
  return result;
}


// The State of a fast call's arguments (``argc`` of them, the first the state), or nullptr with an error.
State* state_of(PyObject* const* argv, Py_ssize_t argc, Py_ssize_t want, const char* usage) {
  if (argc != want) {
    PyErr_SetString(PyExc_TypeError, usage);
    return nullptr;
  }
  return static_cast<State*>(PyCapsule_GetPointer(argv[0], "copyhunt.native_recorder.State"));
}

// record(state, seq, plan, args, kwargs, out) -> bool: True when the op was recorded here.
PyObject* record(PyObject*, PyObject* const* argv, Py_ssize_t argc) {
  State* s = state_of(argv, argc, 6, "record(state, seq, plan, args, kwargs, out)");
  if (s == nullptr) return nullptr;
  int r = record_op(s, argv[1], argv[2], argv[3], argv[4] == Py_None ? nullptr : argv[4], argv[5]);
  if (r < 0) return nullptr;
  return PyBool_FromLong(r);
}


// attach_dispatch(state, plans, plan_type, seq_iter, record_ops, declined, set_eval_frame, py_record,
//                 internal_error): enable dispatch() on this state.
PyObject* attach_dispatch(PyObject*, PyObject* args) {
  PyObject *cap, *plans, *plan_type, *seq_iter, *declined, *set_eval_frame, *py_record, *internal_error;
  int record_ops;
  if (!PyArg_ParseTuple(args, "OO!OOpOOOO:attach_dispatch", &cap, &PyDict_Type, &plans, &plan_type, &seq_iter,
                        &record_ops, &declined, &set_eval_frame, &py_record, &internal_error)) {
    return nullptr;
  }
  auto* s = static_cast<State*>(PyCapsule_GetPointer(cap, "copyhunt.native_recorder.State"));
  if (s == nullptr) return nullptr;
  PyObject** slots[] = {&s->plans, &s->plan_type, &s->seq_iter, &s->declined, &s->set_eval_frame, &s->py_record,
                        &s->internal_error};
  PyObject* values[] = {plans, plan_type, seq_iter, declined, set_eval_frame, py_record, internal_error};
  for (size_t i = 0; i < 7; ++i) {
    Py_INCREF(values[i]);
    Py_XSETREF(*slots[i], values[i]);
  }
  s->record_ops = record_ops != 0;
  Py_RETURN_NONE;
}

// Dynamo's frame hook off (capture/dispatch.py _OWN_DYNAMO_SWITCH). New reference to the prior hook.
PyObject* hook_off(State* s) {
  if (s->set_eval_frame == Py_None) Py_RETURN_NONE;
  return PyObject_CallOneArg(s->set_eval_frame, Py_None);
}

// Put the prior hook back, keeping any exception being raised. Steals ``prior``.
bool hook_back(State* s, PyObject* prior) {
  if (s->set_eval_frame == Py_None) {
    Py_DECREF(prior);
    return true;
  }
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb);
  PyObject* r = PyObject_CallOneArg(s->set_eval_frame, prior);
  Py_DECREF(prior);
  if (r == nullptr) {
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(tb);
    return false;
  }
  Py_DECREF(r);
  PyErr_Restore(et, ev, tb);
  return true;
}

// dispatch(state, func, args, kwargs) -> the op's result, or the ``declined`` sentinel (nothing done:
// the mode's Python path takes the op). _Mode.__torch_dispatch__'s common path in one call: the plan
// of an op seen before, the next sequence number, the op itself, its record (the compiled recorder,
// else the Python one), with Dynamo's frame hook off throughout. An exception of the op propagates;
// one of the bookkeeping is reported (Recorder.internal_error) and the traced program goes on.
PyObject* dispatch(PyObject*, PyObject* const* argv, Py_ssize_t argc) {
  State* s = state_of(argv, argc, 4, "dispatch(state, func, args, kwargs)");
  if (s == nullptr) return nullptr;
  PyObject* func = argv[1];
  PyObject* op_args = argv[2];
  PyObject* kwargs = argv[3] == Py_None ? nullptr : argv[3];
  if (s->plans == nullptr || !PyTuple_Check(op_args) || (kwargs != nullptr && !PyDict_Check(kwargs))) {
    Py_INCREF(s->declined);
    return s->declined;
  }
  PyObject* plan = PyDict_GetItemWithError(s->plans, func);  // borrowed
  if (plan == nullptr || (PyObject*)Py_TYPE(plan) != s->plan_type) {
    if (PyErr_Occurred()) return nullptr;
    Py_INCREF(s->declined);
    return s->declined;  // not seen yet, composite or profiler bookkeeping: the Python path
  }
  Py_INCREF(plan);  // the op may run arbitrary code; keep the plan
  PyObject* prior = hook_off(s);
  if (prior == nullptr) {
    Py_DECREF(plan);
    return nullptr;
  }
  PyObject* seq = PyIter_Next(s->seq_iter);
  PyObject* out = seq != nullptr ? PyObject_Call(func, op_args, kwargs) : nullptr;
  if (out != nullptr && (PyTuple_GET_ITEM(plan, PLAN_COPY_FN) != Py_None || s->record_ops)) {
    int r = record_op(s, seq, plan, op_args, kwargs, out);
    if (r == 0) {  // declined: the Python recorder, with the frame that called the mode
      PyFrameObject* here = PyEval_GetFrame();
      PyFrameObject* caller = here != nullptr ? PyFrame_GetBack(here) : nullptr;
      PyObject* kw = kwargs != nullptr ? kwargs : PyDict_New();
      PyObject* res = kw == nullptr ? nullptr
                                    : PyObject_CallFunctionObjArgs(s->py_record, seq, plan, op_args, kw, out,
                                                                   caller != nullptr ? (PyObject*)caller : Py_None,
                                                                   nullptr);
      if (kw != kwargs) Py_XDECREF(kw);
      Py_XDECREF(caller);
      r = res != nullptr ? 1 : -1;
      Py_XDECREF(res);
    }
    if (r < 0) {
      if (PyErr_ExceptionMatches(PyExc_Exception)) {  // our bookkeeping: never break the traced program
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        if (tb != nullptr && ev != nullptr) PyException_SetTraceback(ev, tb);
        PyObject* res = PyObject_CallFunctionObjArgs(s->internal_error, func, ev != nullptr ? ev : Py_None, nullptr);
        Py_XDECREF(res);
        PyErr_Clear();
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
      } else {  // KeyboardInterrupt and friends: raised, as the Python path does
        Py_CLEAR(out);
      }
    }
  }
  Py_XDECREF(seq);
  Py_DECREF(plan);
  if (!hook_back(s, prior)) Py_CLEAR(out);
  return out;
}


// --- building records from the rows (RawLog._read's op loop, after the hunt) ---------------------------

// The slot offsets of a slotted class's fields, in order (its member descriptors); false if any field
// is not a plain object slot.
bool slot_offsets(PyTypeObject* type, const char* const* names, size_t n, Py_ssize_t* out) {
  for (size_t i = 0; i < n; ++i) {
    PyObject* d = PyDict_GetItemString(type->tp_dict, names[i]);  // borrowed
    if (d == nullptr || Py_TYPE(d) != &PyMemberDescr_Type) return false;
    PyMemberDef* m = reinterpret_cast<PyMemberDescrObject*>(d)->d_member;
    if (m->type != T_OBJECT_EX) return false;
    out[i] = m->offset;
  }
  return true;
}

// A new instance of a slotted record class with its slots set (new references to ``values``),
// without running __init__: the rows hold exactly the values __init__ would store.
PyObject* new_record(PyTypeObject* type, const Py_ssize_t* offsets, PyObject* const* values, size_t n) {
  PyObject* obj = type->tp_alloc(type, 0);
  if (obj == nullptr) return nullptr;
  for (size_t i = 0; i < n; ++i) {
    Py_INCREF(values[i]);
    *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(obj) + offsets[i]) = values[i];
  }
  return obj;
}

const char* const OP_FIELDS[] = {"seq", "op", "reads", "writes", "allocs", "frees", "site", "module", "region",
                                 "thread", "is_copy", "captured_in_graph"};
const char* const ACCESS_FIELDS[] = {"storage", "offset", "nbytes", "dense"};
const char* const STORAGE_FIELDS[] = {"id", "device", "nbytes", "alive_at_end"};

struct AccessKey {
  long long sid, off, nb;
  int dense;
  bool operator==(const AccessKey& o) const { return sid == o.sid && off == o.off && nb == o.nb && dense == o.dense; }
};
struct AccessKeyHash {
  size_t operator()(const AccessKey& k) const {
    size_t h = std::hash<long long>()(k.sid);
    h = h * 1000003u ^ std::hash<long long>()(k.off);
    h = h * 1000003u ^ std::hash<long long>()(k.nb);
    return h * 1000003u ^ (size_t)k.dense;
  }
};

// build_ops(rows, site_frames, OpRecord, Access, recent_limit) -> list of OpRecord; the rows list is
// emptied as it is read (each row released once its record exists). Equal accesses share one Access
// through a table of the recent ones, cleared when it reaches ``recent_limit`` (as RawLog._read does).
PyObject* build_ops(PyObject*, PyObject* args) {
  PyObject *rows, *site_frames;
  PyTypeObject *op_type, *access_type;
  Py_ssize_t limit;
  if (!PyArg_ParseTuple(args, "O!O!O!O!n:build_ops", &PyList_Type, &rows, &PyList_Type, &site_frames, &PyType_Type,
                        &op_type, &PyType_Type, &access_type, &limit)) {
    return nullptr;
  }
  Py_ssize_t op_off[12], acc_off[4];
  if (!slot_offsets(op_type, OP_FIELDS, 12, op_off) || !slot_offsets(access_type, ACCESS_FIELDS, 4, acc_off)) {
    PyErr_SetString(PyExc_TypeError, "build_ops: the record classes are not slotted as expected");
    return nullptr;
  }
  std::unordered_map<AccessKey, PyObject*, AccessKeyHash> recent;  // owned Access objects
  auto clear_recent = [&]() {
    for (auto& kv : recent) Py_DECREF(kv.second);
    recent.clear();
  };
  PyObject* empty = PyTuple_New(0);
  Py_ssize_t n = PyList_GET_SIZE(rows);
  PyObject* out = PyList_New(n);
  if (out == nullptr || empty == nullptr) {
    Py_XDECREF(out);
    Py_XDECREF(empty);
    return nullptr;
  }
  // The accesses of one flat (storage, offset, nbytes, dense)* tuple, shared through ``recent``.
  auto accesses = [&](PyObject* flat) -> PyObject* {
    if (!PyTuple_Check(flat) || PyTuple_GET_SIZE(flat) % 4) {
      PyErr_SetString(PyExc_ValueError, "build_ops: a malformed access tuple");
      return nullptr;
    }
    Py_ssize_t k = PyTuple_GET_SIZE(flat) / 4;
    if (k == 0) {
      Py_INCREF(empty);
      return empty;
    }
    PyObject* t = PyTuple_New(k);
    if (t == nullptr) return nullptr;
    for (Py_ssize_t j = 0; j < k; ++j) {
      PyObject* const* raw = &PyTuple_GET_ITEM(flat, 4 * j);
      AccessKey key{PyLong_AsLongLong(raw[0]), PyLong_AsLongLong(raw[1]), PyLong_AsLongLong(raw[2]),
                    PyObject_IsTrue(raw[3])};
      if (PyErr_Occurred() || key.dense < 0) {
        Py_DECREF(t);
        return nullptr;
      }
      auto it = recent.find(key);
      PyObject* a;
      if (it != recent.end()) {
        a = it->second;
      } else {
        if ((Py_ssize_t)recent.size() >= limit) clear_recent();
        a = new_record(access_type, acc_off, raw, 4);
        if (a == nullptr) {
          Py_DECREF(t);
          return nullptr;
        }
        recent.emplace(key, a);
      }
      Py_INCREF(a);
      PyTuple_SET_ITEM(t, j, a);
    }
    return t;
  };
  // Check every row before releasing any: on a malformed one nothing is touched (the Python reader
  // can still read them all).
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* row = PyList_GET_ITEM(rows, i);
    bool fine = PyTuple_Check(row) && PyTuple_GET_SIZE(row) == 12;
    for (int f = 2; fine && f <= 3; ++f) {
      PyObject* flat = PyTuple_GET_ITEM(row, f);
      fine = PyTuple_Check(flat) && PyTuple_GET_SIZE(flat) % 4 == 0;
      for (Py_ssize_t j = 0; fine && j < PyTuple_GET_SIZE(flat); j += 4) {
        fine = PyLong_CheckExact(PyTuple_GET_ITEM(flat, j)) && PyLong_CheckExact(PyTuple_GET_ITEM(flat, j + 1)) &&
               PyLong_CheckExact(PyTuple_GET_ITEM(flat, j + 2)) && PyBool_Check(PyTuple_GET_ITEM(flat, j + 3));
      }
    }
    PyObject* site_i = fine ? PyTuple_GET_ITEM(row, 6) : nullptr;
    if (fine && site_i != Py_None) {
      Py_ssize_t si = PyLong_Check(site_i) ? PyLong_AsSsize_t(site_i) : -1;
      PyErr_Clear();
      fine = si >= 0 && si < PyList_GET_SIZE(site_frames);
    }
    if (!fine) {
      Py_DECREF(out);
      Py_DECREF(empty);
      PyErr_Format(PyExc_ValueError, "build_ops: op row %zd is malformed", i);
      return nullptr;
    }
  }
  bool ok = true;
  for (Py_ssize_t i = 0; ok && i < n; ++i) {
    PyObject* row = PyList_GET_ITEM(rows, i);
    PyObject* reads = accesses(PyTuple_GET_ITEM(row, 2));
    PyObject* writes = reads != nullptr ? accesses(PyTuple_GET_ITEM(row, 3)) : nullptr;
    PyObject* site = Py_None;
    PyObject* site_i = PyTuple_GET_ITEM(row, 6);
    if (site_i != Py_None) {
      Py_ssize_t si = PyLong_AsSsize_t(site_i);
      if (si < 0 || si >= PyList_GET_SIZE(site_frames)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "build_ops: a site index out of range");
        site = nullptr;
      } else {
        site = PyList_GET_ITEM(site_frames, si);
      }
    }
    if (reads == nullptr || writes == nullptr || site == nullptr) {
      Py_XDECREF(reads);
      Py_XDECREF(writes);
      ok = false;
      break;
    }
    PyObject* values[12] = {PyTuple_GET_ITEM(row, 0), PyTuple_GET_ITEM(row, 1), reads, writes,
                            PyTuple_GET_ITEM(row, 4), PyTuple_GET_ITEM(row, 5), site, PyTuple_GET_ITEM(row, 7),
                            PyTuple_GET_ITEM(row, 8), PyTuple_GET_ITEM(row, 9), PyTuple_GET_ITEM(row, 10),
                            PyTuple_GET_ITEM(row, 11)};
    PyObject* rec = new_record(op_type, op_off, values, 12);
    Py_DECREF(reads);
    Py_DECREF(writes);
    if (rec == nullptr) {
      ok = false;
      break;
    }
    PyList_SET_ITEM(out, i, rec);
    Py_INCREF(Py_None);
    PyList_SetItem(rows, i, Py_None);  // release the row as its record is built
  }
  clear_recent();
  Py_DECREF(empty);
  if (!ok) {  // only memory errors get here (the rows were checked first); the exception propagates
    Py_DECREF(out);
    return nullptr;
  }
  if (PyList_SetSlice(rows, 0, n, nullptr) < 0) {
    Py_DECREF(out);
    return nullptr;
  }
  return out;
}

// build_storages(devices, nbytes, alive, StorageInfo) -> list of StorageInfo (id = position).
PyObject* build_storages(PyObject*, PyObject* args) {
  PyObject *devices, *nbytes, *alive;
  PyTypeObject* type;
  if (!PyArg_ParseTuple(args, "O!O!OO!:build_storages", &PyList_Type, &devices, &PyList_Type, &nbytes, &alive,
                        &PyType_Type, &type)) {
    return nullptr;
  }
  Py_ssize_t off[4];
  if (!slot_offsets(type, STORAGE_FIELDS, 4, off)) {
    PyErr_SetString(PyExc_TypeError, "build_storages: StorageInfo is not slotted as expected");
    return nullptr;
  }
  Py_ssize_t n = std::min(PyList_GET_SIZE(devices), PyList_GET_SIZE(nbytes));
  PyObject* out = PyList_New(n);
  if (out == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* id = PyLong_FromSsize_t(i);
    int is_alive = id != nullptr ? PySequence_Contains(alive, id) : -1;
    if (is_alive < 0) {
      Py_XDECREF(id);
      Py_DECREF(out);
      return nullptr;
    }
    PyObject* values[4] = {id, PyList_GET_ITEM(devices, i), PyList_GET_ITEM(nbytes, i), is_alive ? Py_True : Py_False};
    PyObject* rec = new_record(type, off, values, 4);
    Py_DECREF(id);
    if (rec == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    PyList_SET_ITEM(out, i, rec);
  }
  return out;
}

PyMethodDef methods[] = {
    {"calibrate", (PyCFunction)calibrate, METH_O, "Find where tensor objects keep their TensorImpl (-1: not found)."},
    {"make_state", (PyCFunction)make_state, METH_VARARGS, "The recorder state shared with the Python recorder."},
    {"build_ops", (PyCFunction)build_ops, METH_VARARGS, "OpRecords from the op rows (RawLog._read's loop)."},
    {"build_storages", (PyCFunction)build_storages, METH_VARARGS, "StorageInfos from the storage table."},
    {"attach_dispatch", (PyCFunction)attach_dispatch, METH_VARARGS, "Enable dispatch() on a state."},
    {"dispatch", (PyCFunction)(void (*)(void))dispatch, METH_FASTCALL,
     "dispatch(state, func, args, kwargs): run and record one op, or return the declined sentinel."},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "record(state, seq, plan, args, kwargs, out) -> bool: record one op; False declines it."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "copyhunt_native_recorder", nullptr, -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit_copyhunt_native_recorder(void) {
  s_cdata = PyUnicode_InternFromString("_cdata");
  s_threaded = PyUnicode_InternFromString("threaded");
  s_path = PyUnicode_InternFromString("path");
  s_watch_pos = PyUnicode_InternFromString("_watch_pos");
  s_record_copy = PyUnicode_InternFromString("_record_copy");
  s_device = PyUnicode_InternFromString("device");
  s_accumulate = PyUnicode_InternFromString("accumulate");
  s_cpu = PyUnicode_InternFromString("cpu");
  s_dtype = PyUnicode_InternFromString("dtype");
  s_dict = PyUnicode_InternFromString("__dict__");
  s_d2d = PyUnicode_InternFromString("d2d");
  s_h2d = PyUnicode_InternFromString("h2d");
  s_d2h = PyUnicode_InternFromString("d2h");
  s_p2p = PyUnicode_InternFromString("p2p");
  return PyModule_Create(&module_def);
}
