// nanobind bindings only: no logic lives here, beyond moving buffers and the GIL across the boundary.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <aws/s3/s3.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "s3torch/buffer_pool.hpp"
#include "s3torch/client.hpp"
#include "s3torch/coalesce.hpp"
#include "s3torch/crc32.hpp"
#include "s3torch/crt_log.hpp"
#include "s3torch/direct_get.hpp"
#include "s3torch/error.hpp"
#include "s3torch/get_stream.hpp"
#include "s3torch/host_register.hpp"
#include "s3torch/prefault.hpp"
#include "s3torch/put_stream.hpp"

namespace nb = nanobind;
using namespace s3torch;

namespace {

struct PyChunk {
  Chunk c;
};

int chunk_getbuffer(PyObject *self, Py_buffer *view, int flags) {
  PyChunk *chunk = nb::inst_ptr<PyChunk>(self);
  // Read-only view straight onto the part buffer; `self` (and so the buffer) stays alive with the view.
  return PyBuffer_FillInfo(view, self, const_cast<uint8_t *>(chunk->c.data),
                           static_cast<Py_ssize_t>(chunk->c.size), 1, flags);
}

PyType_Slot chunk_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void *>(chunk_getbuffer)}, {0, nullptr}};

// A contiguous buffer of a Python object, released on scope exit.
struct Buffer {
  Py_buffer view{};
  Buffer(nb::handle obj, bool writable) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj.ptr(), &view, flags) != 0) throw nb::python_error();
  }
  ~Buffer() { PyBuffer_Release(&view); }
  uint8_t *data() const { return static_cast<uint8_t *>(view.buf); }
  size_t size() const { return static_cast<size_t>(view.len); }
};

// A new bytes object of up to n bytes that `fill(dst)` writes in place with the GIL released (one
// copy, no temporary buffer); `fill` returns how many it wrote.
template <typename Fill>
nb::bytes filled_bytes(size_t n, Fill fill) {
  PyObject *out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
  if (!out) throw nb::python_error();
  nb::object owner = nb::steal(out);
  size_t got;
  {
    nb::gil_scoped_release release;
    got = fill(reinterpret_cast<uint8_t *>(PyBytes_AS_STRING(out)));
  }
  if (got < n) return nb::bytes(PyBytes_AS_STRING(out), got);
  return nb::borrow<nb::bytes>(owner);
}

// A GET into a Python object's memory: holds the object's buffer export, so the memory outlives the
// GET. Destroying it cancels a running GET (waiting, GIL released, until it can no longer write).
// The Python face of an EtagPin. Requests keep the inner shared_ptr, which is purely C++: a shared_ptr
// made from a Python-owned object would take the GIL in its deleter, and requests drop theirs on CRT
// threads (during interpreter exit such a thread dies inside a noexcept callback: the process aborts).
struct PyEtagPin {
  std::shared_ptr<EtagPin> pin = std::make_shared<EtagPin>();
};

std::shared_ptr<EtagPin> pin_of(const PyEtagPin *p) { return p ? p->pin : nullptr; }

struct PyDirectGet {
  std::unique_ptr<DirectGet> get;
  std::unique_ptr<Buffer> buffer;
  PyDirectGet(std::unique_ptr<DirectGet> g, std::unique_ptr<Buffer> b) : get(std::move(g)), buffer(std::move(b)) {}
  PyDirectGet(PyDirectGet &&) = default;
  ~PyDirectGet() {
    if (get) {
      nb::gil_scoped_release release;
      get.reset();
    }
    buffer.reset();  // PyBuffer_Release needs the GIL
  }
};

// Destination memory mapped in ahead of a transfer (see Prefault): holds the buffers' exports so the
// memory outlives the thread. close() (or destruction) stops the thread and releases them.
struct PyPrefault {
  std::vector<std::unique_ptr<Buffer>> buffers;
  std::atomic<uint64_t> mapped{0};
  std::unique_ptr<Prefault> prefault;
  explicit PyPrefault(const nb::sequence &objects) {
    std::vector<Prefault::Span> spans;
    for (nb::handle obj : objects) {
      buffers.push_back(std::make_unique<Buffer>(obj, true));
      spans.push_back({buffers.back()->data(), buffers.back()->size()});
    }
    prefault = std::make_unique<Prefault>(spans, &mapped);
  }
  void close() {
    // Taken while holding the GIL: a second close() (another thread, or the destructor) finds nothing.
    std::unique_ptr<Prefault> running = std::move(prefault);
    if (running) {
      nb::gil_scoped_release release;
      running.reset();
    }
    buffers.clear();  // PyBuffer_Release needs the GIL
  }
  ~PyPrefault() { close(); }
};

// A dict of a stats struct's fields, from its for_each (the one list of them).
template <class Stats>
nb::dict as_dict(const Stats &stats) {
  nb::dict d;
  stats.for_each([&](const char *name, auto value) { d[name] = value; });
  return d;
}

nb::object info_tuple(const ObjectInfo &o) {
  return nb::make_tuple(o.key, o.etag, o.size, o.last_modified, o.storage_class, o.restore);
}

constexpr std::pair<Crc32Kernel, const char *> kCrc32Kernels[] = {
    {Crc32Kernel::kTable, "table"}, {Crc32Kernel::kPclmul, "pclmul"}, {Crc32Kernel::kVpclmul, "vpclmul"}};

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "s3torch native core: AWS CRT S3 client, pinned part-buffer pool, zero-copy streams";

  nb::register_exception_translator([](const std::exception_ptr &p, void *) {
    try {
      std::rethrow_exception(p);
    } catch (const S3Error &e) {
      nb::object make = nb::module_::import_("s3torch._exceptions").attr("make_s3_exception");
      nb::object exc = make(e.what(), nb::arg("bucket") = e.bucket, nb::arg("key") = e.key,
                            nb::arg("status") = e.status, nb::arg("code") = e.code,
                            nb::arg("request_id") = e.request_id, nb::arg("operation") = e.operation);
      PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(exc.ptr())), exc.ptr());
    } catch (const UsageError &e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("set_crt_log_level", &set_crt_log_level, nb::arg("level"),
        "Level of the CRT messages queued for Python's logging (aws_log_level: 0 none ... 6 trace)");
  m.def("crt_log_level", &crt_log_level);
  m.def("crt_log_dropped", &crt_log_dropped, "CRT messages dropped because the queue was full");
  m.def(
      "wait_crt_log_records",
      [](int timeout_ms) {
        std::vector<LogRecord> records;
        {
          nb::gil_scoped_release release;
          records = wait_crt_log_records(timeout_ms);
        }
        nb::list out;
        for (auto &r : records) out.append(nb::make_tuple(r.level, r.subject, r.message));
        return out;
      },
      nb::arg("timeout_ms"), "Queued CRT messages as (level, subject, text), waiting up to timeout_ms for one");

  m.def(
      "crc32",
      [](nb::handle data, uint32_t value) {
        Buffer b(data, false);
        nb::gil_scoped_release release;
        return s3torch::crc32(b.data(), b.size(), value);
      },
      nb::arg("data"), nb::arg("value") = 0,
      "zlib's CRC-32 of a buffer, continuing from `value` (VPCLMULQDQ or PCLMULQDQ folding where the CPU "
      "has it; the GIL released)");
  m.def(
      "_crc32_kernels",
      [] {
        std::vector<std::string> names;
        for (auto [kernel, name] : kCrc32Kernels) {
          if (crc32_kernel_available(kernel)) names.emplace_back(name);
        }
        return names;
      },
      "The CRC-32 implementations this CPU runs (for tests: crc32 uses the last)");
  m.def(
      "_crc32_with",
      [](const std::string &name, nb::handle data, uint32_t value) {
        for (auto [kernel, known] : kCrc32Kernels) {
          if (name != known) continue;
          if (!crc32_kernel_available(kernel)) throw UsageError("this CPU lacks the CRC-32 kernel " + name);
          Buffer b(data, false);
          nb::gil_scoped_release release;
          return crc32_with(kernel, b.data(), b.size(), value);
        }
        throw UsageError("no CRC-32 kernel named " + name);
      },
      nb::arg("kernel"), nb::arg("data"), nb::arg("value") = 0, "crc32 with the named implementation (for tests)");

  m.def("default_memory_limit", &aws_s3_default_memory_limit_for_throughput, nb::arg("throughput_target_gbps"),
        "The CRT's part-buffer memory limit for a throughput target when none is configured");

  nb::class_<PyChunk>(m, "Chunk", nb::type_slots(chunk_slots),
                      "Bytes of an object in a pinned part buffer; supports the buffer protocol without copying")
      .def("__len__", [](const PyChunk &c) { return c.c.size; })
      .def_prop_ro("offset", [](const PyChunk &c) { return c.c.offset; }, "object offset of the first byte")
      .def_prop_ro("address", [](const PyChunk &c) { return reinterpret_cast<uintptr_t>(c.c.data); })
      .def("__repr__", [](const PyChunk &c) {
        return "<s3torch Chunk offset=" + std::to_string(c.c.offset) + " len=" + std::to_string(c.c.size) + ">";
      });

  nb::class_<GetStream>(m, "GetObjectStream")
      .def("__iter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__next__",
           [](GetStream &s) {
             std::optional<Chunk> c;
             {
               nb::gil_scoped_release release;
               c = s.next();
             }
             if (!c) throw nb::stop_iteration();
             return PyChunk{std::move(*c)};
           })
      .def(
          "next_chunk",
          [](GetStream &s, size_t max_size) -> std::optional<PyChunk> {
            std::optional<Chunk> c;
            {
              nb::gil_scoped_release release;
              c = s.next(max_size);
            }
            if (!c) return std::nullopt;
            return PyChunk{std::move(*c)};
          },
          nb::arg("max_size"),
          "The next chunk, at most max_size bytes of it (the rest stays queued); None at the end")
      .def(
          "read_into",
          [](GetStream &s, nb::handle buffer) {
            Buffer b(buffer, true);
            nb::gil_scoped_release release;
            return s.read_into(b.data(), b.size());
          },
          nb::arg("buffer"))
      .def(
          "read",
          [](GetStream &s, int64_t n) {
            if (n < 0) {
              nb::gil_scoped_release release;
              n = static_cast<int64_t>(s.remaining());
            }
            return filled_bytes(static_cast<size_t>(n), [&](uint8_t *dst) {
              return s.read_into(dst, static_cast<size_t>(n));
            });
          },
          nb::arg("size") = -1, "Next `size` bytes (all that remain if negative) as one bytes object")
      .def(
          "peek",
          [](GetStream &s, size_t n) {
            return filled_bytes(n, [&](uint8_t *dst) { return s.peek(dst, n); });
          },
          nb::arg("size"), "The next `size` bytes without consuming them (fewer only at the end)")
      .def("skip", &GetStream::skip, nb::arg("size"), nb::call_guard<nb::gil_scoped_release>(),
           "Discards the next `size` bytes; returns how many (fewer only at the end)")
      .def("remaining", &GetStream::remaining, nb::call_guard<nb::gil_scoped_release>())
      .def("close", &GetStream::close, nb::call_guard<nb::gil_scoped_release>())
      .def("tell", &GetStream::tell)
      .def_prop_ro("bucket", &GetStream::bucket)
      .def_prop_ro("key", &GetStream::key)
      .def_prop_ro("start", &GetStream::start)
      .def_prop_ro("end", &GetStream::end)
      .def_prop_ro("object_size", &GetStream::object_size)
      .def_prop_ro("closed", &GetStream::closed);

  nb::class_<PyDirectGet>(m, "DirectGet", "A ranged GET receiving straight into a caller's buffer")
      .def(
          "wait",
          [](PyDirectGet &g) {
            nb::gil_scoped_release release;
            g.get->wait();
          },
          "Blocks until every byte is in the buffer; raises S3Exception if the GET failed")
      .def(
          "cancel",
          [](PyDirectGet &g) {
            nb::gil_scoped_release release;
            g.get->cancel();
          },
          "Stops the GET and waits until it can no longer write to the buffer")
      .def_prop_ro("done", [](const PyDirectGet &g) { return g.get->done(); })
      .def_prop_ro("bucket", [](const PyDirectGet &g) { return g.get->bucket(); })
      .def_prop_ro("key", [](const PyDirectGet &g) { return g.get->key(); })
      .def_prop_ro("start", [](const PyDirectGet &g) { return g.get->start(); })
      .def_prop_ro("end", [](const PyDirectGet &g) { return g.get->end(); });

  m.attr("SCATTER") = kScatterSupported;

  nb::class_<PyPrefault>(m, "Prefault",
                         "Maps in the pages of writable buffers that a transfer is about to fill, from a "
                         "thread, if they add up to 32 MiB or more (fresh memory: cheaper than a fault per "
                         "page on the threads that receive the bytes)")
      .def(nb::init<const nb::sequence &>(), nb::arg("buffers"))
      .def("close", &PyPrefault::close, "Stops the thread (at its next 8 MiB step) and releases the buffers")
      .def_prop_ro(
          "mapped", [](const PyPrefault &p) { return p.mapped.load(); }, "Bytes mapped in so far")
      .def_prop_ro(
          "finished", [](const PyPrefault &p) { return !p.prefault || p.prefault->finished(); },
          "Whether its thread has stopped (or never started)")
      .def_static("supported", &Prefault::supported,
                  "Whether this kernel maps memory in on request (MADV_POPULATE_WRITE, Linux 5.14)");

  nb::class_<PyEtagPin>(m, "EtagPin",
                        "The object version (ETag) that the GETs given this pin must all read: the first "
                        "response's, then sent as If-Match")
      .def(nb::init<>())
      .def(
          "check", [](PyEtagPin &p, const std::string &etag) { return p.pin->check(etag); }, nb::arg("etag"),
          "Pins `etag` if none is pinned yet; returns whether it matches the pinned one")
      .def_prop_ro("etag", [](const PyEtagPin &p) -> std::optional<std::string> {
        std::string e = p.pin->get();
        if (e.empty()) return std::nullopt;
        return e;
      });

  m.def(
      "_coalesce",
      [](const std::vector<uint64_t> &starts, const std::vector<uint64_t> &ends, double max_gap) {
        if (starts.size() != ends.size()) throw UsageError("coalesce: starts and ends differ in length");
        std::vector<ByteSpan> spans(starts.size());
        for (size_t i = 0; i < spans.size(); ++i) spans[i] = ByteSpan{starts[i], ends[i]};
        CoalesceIssue issue;
        std::vector<SpanGroup> groups;
        {
          nb::gil_scoped_release release;
          groups = coalesce(spans, max_gap, issue);
        }
        std::vector<std::tuple<uint64_t, uint64_t, size_t, size_t>> out;
        out.reserve(groups.size());
        for (const SpanGroup &g : groups) out.emplace_back(g.start, g.end, g.first, g.last);
        return std::make_tuple(std::move(out), static_cast<int>(issue.kind), issue.index, issue.previous);
      },
      nb::arg("starts"), nb::arg("ends"), nb::arg("max_gap"),
      "Tests only (the loaders use s3reader.coalesce_ranges): the C++ library's coalesce. "
      "Groups sorted spans [starts[i], ends[i]) whose gaps are at most max_gap: ([(start, end, first, "
      "last)], issue, index, previous); issue 0 = none, 1 = end before start, 2 = unsorted, 3 = overlapping "
      "(at span `index`, after span `previous`; no groups then)");

  nb::class_<RecordingRegistrar>(m, "_RecordingRegistrar", "Tests only: a fake GPU runtime that records registrations")
      .def_prop_ro("live_bytes", &RecordingRegistrar::live_bytes)
      .def_prop_ro("registrations", &RecordingRegistrar::registrations)
      .def_prop_ro("unregistrations", &RecordingRegistrar::unregistrations)
      .def_prop_ro("bad_unregistrations", &RecordingRegistrar::bad_unregistrations);

  m.def("_set_direct_placement_fault", &set_direct_placement_fault, nb::arg("on"),
        "Tests only: make direct GETs' parts land at wrong offsets (they must fall back)");

  m.def("_set_scatter_append_fault", &set_scatter_append_fault, nb::arg("on"),
        "Tests only: scatter appends find a buffer other than their ticket's (the GET must fail)");
  m.def("_set_lent_body_fault", &set_lent_body_fault, nb::arg("on"),
        "Tests only: upload parts with lent bytes cannot make their body (the upload must fail)");
  m.def("_set_map_failures", &set_map_failures, nb::arg("count"),
        "Tests only: the next `count` part-buffer mappings fail (their requests must fail cleanly)");

  nb::class_<UploadLoan>(m, "UploadLoan",
                         "Caller memory an upload sends parts from in place (PutObjectStream.write_lent)")
      .def_prop_ro("returned", &UploadLoan::returned, "whether the CRT let go of every part lent over it");

  nb::class_<PutStream>(m, "PutObjectStream")
      .def(
          "write",
          [](PutStream &s, nb::handle data) {
            Buffer b(data, false);
            nb::gil_scoped_release release;
            s.write(b.data(), b.size());
            return b.size();
          },
          nb::arg("data"))
      .def(
          "write_lent",
          [](PutStream &s, nb::handle data, std::shared_ptr<UploadLoan> loan, uintptr_t owner_start,
             uintptr_t owner_end) {
            Buffer b(data, false);
            auto at = reinterpret_cast<uintptr_t>(b.data());
            nb::gil_scoped_release release;
            if (at < owner_start || at > owner_end || b.size() > owner_end - at) {
              s.write(b.data(), b.size());  // not the owner's memory: nothing can keep it unchanged
            } else {
              s.write_lent(b.data(), b.size(), loan);
            }
            return b.size();
          },
          nb::arg("data"), nb::arg("loan"), nb::arg("owner_start"), nb::arg("owner_end"),
          "write() of bytes inside [owner_start, owner_end), memory the caller keeps valid and unchanged "
          "until `loan` (from new_loan()) came back: whole parts inside them are sent from them in place")
      .def("new_loan", &PutStream::new_loan, "a loan for write_lent, counted with the stream's others")
      .def("close", &PutStream::close, nb::call_guard<nb::gil_scoped_release>())
      .def("abort", &PutStream::abort, nb::call_guard<nb::gil_scoped_release>())
      .def_prop_ro("bytes_written", &PutStream::bytes_written)
      .def_prop_ro("part_size", &PutStream::part_size)
      .def_prop_ro("closed", &PutStream::closed)
      .def_prop_ro("bucket", &PutStream::bucket)
      .def_prop_ro("key", &PutStream::key);

  nb::class_<Client>(m, "Client")
      .def(
          "__init__",
          [](Client *self, const std::string &region, const std::string &endpoint, const std::string &user_agent_prefix,
             const std::string &profile, double throughput_target_gbps, uint64_t part_size, bool unsigned_requests,
             bool force_path_style, uint32_t max_attempts, uint64_t memory_limit_bytes, uint32_t read_timeout_s,
             bool upload_checksum, bool requester_pays, bool download_checksum) {
            ClientConfig c;
            c.region = region;
            c.endpoint = endpoint;
            c.user_agent_prefix = user_agent_prefix;
            c.profile = profile;
            c.throughput_target_gbps = throughput_target_gbps;
            c.part_size = part_size;
            c.unsigned_requests = unsigned_requests;
            c.force_path_style = force_path_style;
            c.max_attempts = max_attempts;
            c.memory_limit_bytes = memory_limit_bytes;
            c.read_timeout_s = read_timeout_s;
            c.upload_checksum = upload_checksum;
            c.requester_pays = requester_pays;
            c.download_checksum = download_checksum;
            new (self) Client(std::move(c));
          },
          nb::arg("region"), nb::arg("endpoint") = "", nb::arg("user_agent_prefix") = "", nb::arg("profile") = "",
          nb::arg("throughput_target_gbps") = 10.0, nb::arg("part_size") = 8ull << 20,
          nb::arg("unsigned") = false, nb::arg("force_path_style") = false, nb::arg("max_attempts") = 10,
          nb::arg("memory_limit_bytes") = 0, nb::arg("read_timeout_s") = 0, nb::arg("upload_checksum") = true,
          nb::arg("requester_pays") = false, nb::arg("download_checksum") = true)
      .def(
          "get",
          [](Client &c, const std::string &bucket, const std::string &key, std::optional<uint64_t> start,
             std::optional<uint64_t> end, nb::handle scatter, const PyEtagPin *py_pin) {
            std::shared_ptr<EtagPin> pin = pin_of(py_pin);
            if (scatter.is_none()) {
              nb::gil_scoped_release release;
              return c.get(bucket, key, start, end, nullptr, std::move(pin));
            }
            // The destinations' buffer exports live as long as the stream; releasing them needs the GIL.
            auto buffers = std::shared_ptr<std::vector<std::unique_ptr<Buffer>>>(
                new std::vector<std::unique_ptr<Buffer>>(), [](std::vector<std::unique_ptr<Buffer>> *v) {
                  nb::gil_scoped_acquire acquire;
                  delete v;
                });
            std::vector<ScatterRange> ranges;
            for (nb::handle item : scatter) {
              auto pair = nb::cast<nb::tuple>(item);
              if (pair.size() != 2) throw nb::value_error("scatter items are (object offset, writable buffer)");
              uint64_t offset = nb::cast<uint64_t>(pair[0]);
              buffers->push_back(std::make_unique<Buffer>(pair[1], true));
              const Buffer &b = *buffers->back();
              if (b.size()) ranges.push_back(ScatterRange{offset, offset + b.size(), b.data()});
            }
            std::sort(ranges.begin(), ranges.end(),
                      [](const ScatterRange &a, const ScatterRange &b) { return a.start < b.start; });
            std::unique_ptr<GetStream> s;
            {
              nb::gil_scoped_release release;
              s = c.get(bucket, key, start, end, std::make_shared<ScatterMap>(std::move(ranges)), std::move(pin));
            }
            s->hold(std::move(buffers));
            return s;
          },
          nb::arg("bucket"), nb::arg("key"), nb::arg("start") = nb::none(), nb::arg("end") = nb::none(),
          nb::arg("scatter") = nb::none(), nb::arg("pin").none() = nb::none(),
          "A GET stream of [start, end). `scatter`: (object offset, writable buffer) pairs whose bytes are "
          "written straight into the buffers as they arrive; the stream's bytes at those offsets are "
          "unspecified (skip them)")
      .def(
          "get_into",
          [](Client &c, const std::string &bucket, const std::string &key, uint64_t start, nb::handle buffer,
             uint64_t part_size, const PyEtagPin *py_pin) {
            std::shared_ptr<EtagPin> pin = pin_of(py_pin);
            auto b = std::make_unique<Buffer>(buffer, true);
            std::unique_ptr<DirectGet> g;
            {
              nb::gil_scoped_release release;
              g = c.get_into(bucket, key, start, start + b->size(), b->data(), part_size, std::move(pin));
            }
            return PyDirectGet(std::move(g), std::move(b));
          },
          nb::arg("bucket"), nb::arg("key"), nb::arg("start"), nb::arg("buffer"), nb::arg("part_size") = 0,
          nb::arg("pin").none() = nb::none(),
          "Starts a GET of bytes [start, start + len(buffer)) straight into the writable buffer")
      .def(
          "get_bytes",
          [](Client &c, const std::string &bucket, const std::string &key, uint64_t start, uint64_t end,
             const PyEtagPin *py_pin, bool whole_object, nb::handle prefix) -> nb::object {
            std::shared_ptr<EtagPin> pin = pin_of(py_pin);
            if (end < start) throw nb::value_error("end must not be before start");
            if (whole_object && start != 0) throw nb::value_error("whole_object needs start 0");
            std::optional<Buffer> head;
            if (prefix.is_valid() && !prefix.is_none()) {
              head.emplace(prefix, false);
              if (whole_object) throw nb::value_error("whole_object takes no prefix");
              if (head->size() > end - start) throw nb::value_error("prefix longer than [start, end)");
            }
            const uint64_t known = head ? head->size() : 0;
            // A new bytes object is filled in place by the part requests (one copy, from the socket's read
            // buffer; no pool memory). Nothing else can see it before it is returned.
            PyObject *raw = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(end - start));
            if (!raw) throw nb::python_error();
            nb::object bytes = nb::steal(raw);
            if (end == start) return bytes;
            auto *dst = reinterpret_cast<uint8_t *>(PyBytes_AS_STRING(raw));
            {
              nb::gil_scoped_release release;
              if (known) std::memcpy(dst, head->data(), known);
              if (start + known < end) {
                c.get_fresh(bucket, key, start + known, end, dst + known, std::move(pin), whole_object);
              }
            }
            return bytes;
          },
          nb::arg("bucket"), nb::arg("key"), nb::arg("start"), nb::arg("end"), nb::arg("pin").none() = nb::none(),
          nb::arg("whole_object") = false, nb::arg("prefix").none() = nb::none(),
          "Bytes [start, end) of the object as a new bytes object, received straight into it. "
          "whole_object: [0, end) is the whole object (its size from a listing), read so that it is "
          "checked against the checksum the server stored (Client.get_whole). prefix: bytes [start, "
          "start + len(prefix)) already received (copied in; only the rest is requested)")
      .def("put", &Client::put, nb::arg("bucket"), nb::arg("key"), nb::arg("storage_class") = "",
           nb::call_guard<nb::gil_scoped_release>())
      .def("head",
           [](Client &c, const std::string &bucket, const std::string &key) {
             ObjectInfo o;
             {
               nb::gil_scoped_release release;
               o = c.head(bucket, key);
             }
             return info_tuple(o);
           })
      .def("list",
           [](Client &c, const std::string &bucket, const std::string &prefix, const std::string &delimiter,
              int max_keys, const std::string &token) {
             ListPage p;
             {
               nb::gil_scoped_release release;
               p = c.list(bucket, prefix, delimiter, max_keys, token);
             }
             nb::list objects;
             for (auto &o : p.objects) objects.append(info_tuple(o));
             return nb::make_tuple(objects, p.common_prefixes, p.next_continuation_token, p.truncated);
           })
      .def_prop_ro("read_window", &Client::read_window,
                   "Bytes a GET stream may run ahead of its consumer (read backpressure)")
      .def("request_url", &Client::request_url, nb::arg("bucket"), nb::arg("key"),
           "Where a request for bucket/key goes (path style or virtual-hosted)")
      .def("delete", &Client::remove, nb::call_guard<nb::gil_scoped_release>())
      .def("copy", &Client::copy, nb::call_guard<nb::gil_scoped_release>())
      .def("pool_stats", [](const Client &c) { return as_dict(c.pool_stats()); })
      .def(
          "register_host_memory",
          [](Client &c, const std::string &cuda_runtime, int device) {
            c.register_host_memory(cuda_host_registrar(cuda_runtime, device));
          },
          nb::arg("cuda_runtime"), nb::arg("device"), nb::call_guard<nb::gil_scoped_release>(),
          "Registers the pool's slabs, now and later, with the CUDA runtime library `cuda_runtime` "
          "(cudaHostRegister, for `device`), so that copies from part buffers to the GPU are DMA")
      .def(
          "_register_host_memory_fake",
          [](Client &c) {
            // Made and owned in C++: the pool may drop it on a CRT thread, where no Python object may go.
            auto r = std::make_shared<RecordingRegistrar>();
            c.register_host_memory(r);
            return r;
          },
          "Tests only: as register_host_memory, with a fake GPU runtime that records (_RecordingRegistrar)")
      .def("counters", [](const Client &c) { return as_dict(c.counters()); });
}
