#pragma once
// Part-buffer pool plugged into aws-c-s3 (s3_buffer_pool.h).
//
// Buffers of the client's part size are carved from large page-aligned slabs (mmap), locked with mlock
// when RLIMIT_MEMLOCK allows (on fault: each page is locked when first written), so that registering
// a slab with CUDA makes its buffers true pinned memory.
// Larger ones get their own mapping. A hard byte limit bounds what granted tickets occupy (a part buffer
// each, whatever the size asked): a reservation that does not fit waits (FIFO, uploads' included) until
// a ticket is released, so a slow consumer stalls the download instead of growing memory. Tickets keep the pool alive, so chunks may outlive the client.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "s3torch/host_register.hpp"
#include "s3torch/scatter_map.hpp"

struct aws_s3_buffer_pool;
struct aws_s3_meta_request;
struct aws_s3_buffer_pool_config;
struct aws_allocator;

namespace s3torch {

struct PoolStats {
  uint64_t limit_bytes = 0;      // hard limit on reserved bytes
  uint64_t reserved_bytes = 0;   // what granted tickets occupy (a whole part buffer each, or own pages)
  uint64_t in_use_bytes = 0;     // tickets whose buffer was claimed
  uint64_t peak_bytes = 0;       // highest reserved_bytes seen
  uint64_t mapped_bytes = 0;     // memory currently mapped for buffers (slabs + odd sizes)
  uint64_t locked_bytes = 0;     // of mapped_bytes, locked with mlock (each page once first written)
  uint64_t resident_bytes = 0;   // slab pages in RAM: written at least once
  uint64_t map_failures = 0;     // buffers that could not be mapped (their requests failed)
  uint64_t pending_reservations = 0;
  uint64_t tickets_granted = 0;
  uint64_t waits = 0;            // reservations that had to wait for memory
  bool mlock_ok = false;         // every mapping so far could be locked
  uint64_t part_size = 0;
  uint64_t slab_bytes = 0;
  uint64_t direct_tickets = 0;   // tickets whose buffer was a caller's memory (DirectGet)
  uint64_t scatter_tickets = 0;  // part buffers of GET streams with a ScatterMap
  uint64_t registered_bytes = 0;       // of mapped_bytes, slabs registered with the GPU runtime (pinned)
  uint64_t registration_failures = 0;  // slabs the GPU runtime refused to register (left pageable)

  // Calls f(name, value) for every field: the one list the bindings build their dict from.
  template <class F>
  void for_each(F &&f) const {
    f("limit_bytes", limit_bytes);
    f("reserved_bytes", reserved_bytes);
    f("in_use_bytes", in_use_bytes);
    f("peak_bytes", peak_bytes);
    f("mapped_bytes", mapped_bytes);
    f("locked_bytes", locked_bytes);
    f("resident_bytes", resident_bytes);
    f("map_failures", map_failures);
    f("pending_reservations", pending_reservations);
    f("tickets_granted", tickets_granted);
    f("waits", waits);
    f("mlock_ok", mlock_ok);
    f("part_size", part_size);
    f("slab_bytes", slab_bytes);
    f("direct_tickets", direct_tickets);
    f("scatter_tickets", scatter_tickets);
    f("registered_bytes", registered_bytes);
    f("registration_failures", registration_failures);
  }
};

// Caller memory that an upload sends whole parts from, in place (PutStream::write_lent): counts the
// part buffers lent over it that the CRT still holds. The memory must stay valid and unchanged until
// every one came back.
// Derives from enable_shared_from_this so that a loan passed back from Python is this shared_ptr, not
// one whose deleter takes the GIL (a CRT thread releasing the last lent ticket must never need it).
class UploadLoan : public std::enable_shared_from_this<UploadLoan> {
 public:
  // `total`: a loan that also counts every buffer lent under this one (all of one upload's).
  explicit UploadLoan(std::shared_ptr<UploadLoan> total = nullptr) : total_(std::move(total)) {}
  void lend() {
    if (total_) total_->lend();
    std::lock_guard<std::mutex> lock(mu_);
    ++out_;
  }
  void give_back() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --out_;
    }
    cv_.notify_all();
    if (total_) total_->give_back();
  }
  bool returned() const {
    std::lock_guard<std::mutex> lock(mu_);
    return out_ == 0;
  }
  // Waits up to `timeout_s` until fewer than `n` lent buffers are out; returns whether they are.
  bool wait_below(uint64_t n, double timeout_s) const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return out_ < n; });
  }

 private:
  std::shared_ptr<UploadLoan> total_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  uint64_t out_ = 0;
};

// Caller memory that the part requests of one registered GET receive into, in part order: the pool
// hands its tickets consecutive slices instead of pool buffers, outside the memory limit (the memory
// is the caller's). DirectGet checks every delivered part landed where its object offset says. An
// upload's sink (with a loan) is the bytes being written, lent as the buffers of its whole parts.
struct DirectSink {
  uint8_t *base = nullptr;
  uint64_t size = 0;
  uint64_t assigned = 0;  // bytes handed to tickets so far (under the pool's direct lock)
  // Set for an upload's sink: its slices are lent as part buffers that come full (the CRT takes them
  // in place, our patch 0007) and are counted here until the CRT returns them.
  std::shared_ptr<UploadLoan> loan;
};

// Whether this build can scatter: it needs the `append` entry our edit adds to aws-c-s3's ticket
// vtable (third_party/crt.cmake), absent from an installed CRT.
#ifdef S3TORCH_CRT_TICKET_APPEND
constexpr bool kScatterSupported = true;
#else
constexpr bool kScatterSupported = false;
#endif

// Caller memory an upload's next writes come from (PutStream::write_lent), unchanged until `loan` came
// back: bytes written from inside it into a part buffer are recorded by the buffer's ticket and sent
// from here (our patch 0008) instead of copied. `taken` counts them (under the pool's receiver lock).
struct LentRange {
  const uint8_t *begin = nullptr;
  const uint8_t *end = nullptr;
  std::shared_ptr<UploadLoan> loan;
  uint64_t taken = 0;
};

// Where the parts of one registered request go instead of ordinary pool buffers: into caller memory in
// part order (DirectGet), or into pool buffers that append through a ScatterMap (GetStream). An
// upload's `lent` range: see LentRange.
struct PoolReceiver {
  DirectSink *sink = nullptr;
  std::shared_ptr<ScatterMap> scatter;
  LentRange *lent = nullptr;
};

// Tests only: hand out direct slices from the end backwards, so that parts land in the wrong place
// and DirectGet must detect it and fall back.
void set_direct_placement_fault(bool on);

// Tests only: the next `count` buffer mappings fail as if mmap had (their requests must fail cleanly).
void set_map_failures(int count);

// Tests only: every scatter append finds a buffer other than its ticket's (the request must fail).
void set_scatter_append_fault(bool on);

// Tests only: every upload part with lent bytes fails to make its body (the upload must fail cleanly).
void set_lent_body_fault(bool on);

class BufferPool;

// Creates pools for aws_s3_client_config.buffer_pool_factory_fn; `user_data` must point to a
// PoolFactoryContext that outlives aws_s3_client_new.
struct PoolFactoryContext {
  uint64_t memory_limit = 0;            // 0: take the limit the CRT passes (its default)
  std::shared_ptr<BufferPool> created;  // set by the factory
};

aws_s3_buffer_pool *pool_factory(aws_allocator *allocator, aws_s3_buffer_pool_config config,
                                 void *user_data);

class BufferPool {
 public:
  virtual ~BufferPool() = default;
  virtual PoolStats stats() const = 0;
  virtual uint64_t limit_bytes() const = 0;  // the hard limit (cheap: stats() also counts residency)
  // Registration of a GET's receiver. Hold lock_receivers() across making the meta request and
  // add_receiver, so that its first reservation (on a CRT thread) cannot run before the registration.
  virtual std::unique_lock<std::recursive_mutex> lock_receivers() = 0;
  virtual void add_receiver(const aws_s3_meta_request *meta, PoolReceiver receiver) = 0;  // lock held
  virtual void remove_receiver(const aws_s3_meta_request *meta) = 0;
  // Registers every slab, those mapped now and later, with `registrar` (a GPU runtime), and
  // unregisters each before it is unmapped. The first registrar set stays; later calls do nothing.
  // Buffers larger than a part (a mapping each, short-lived) are not registered.
  virtual void set_registrar(std::shared_ptr<HostRegistrar> registrar) = 0;
};

}  // namespace s3torch
