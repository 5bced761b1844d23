#include "s3torch/buffer_pool.hpp"

#include <aws/common/error.h>
#include <aws/common/logging.h>
#include <aws/s3/s3.h>
#include <aws/io/stream.h>
#include <aws/s3/s3_buffer_pool.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

#include "s3torch/crt_log.hpp"

namespace s3torch {

namespace {

std::atomic<bool> g_direct_fault{false};
std::atomic<int> g_map_failures{0};  // tests: this many next mappings fail as if mmap had
std::atomic<bool> g_scatter_fault{false};  // tests: appends see a buffer that is not the ticket's
std::atomic<bool> g_lent_body_fault{false};  // tests: parts with lent bytes cannot make their body

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

struct Mapping {
  uint8_t *base = nullptr;
  size_t bytes = 0;
  bool locked = false;
  bool registered = false;  // with the pool's HostRegistrar (slabs only)
};

Mapping map_bytes(size_t bytes) {
  for (int n = g_map_failures.load(); n > 0;) {
    if (g_map_failures.compare_exchange_weak(n, n - 1)) return {};
  }
  void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return {};
  // Best effort: mlock fails beyond RLIMIT_MEMLOCK; the buffer then is ordinary pageable memory.
  // Lock on fault: a page is locked when first written, not all at once here. Faulting in a whole
  // slab up front cost a 100 MB load about 15 ms, and with scatter most of a part buffer is never
  // written (its bytes go straight to their tensors). CUDA host registration pins every page anyway.
  bool locked = false;
#ifdef MLOCK_ONFAULT
  if (mlock2(p, bytes, MLOCK_ONFAULT) == 0) {
    locked = true;
  } else if (errno == EINVAL || errno == ENOSYS) {
    locked = mlock(p, bytes) == 0;  // a kernel older than 4.4
  }
#else
  locked = mlock(p, bytes) == 0;
#endif
  return Mapping{static_cast<uint8_t *>(p), bytes, locked};
}

void unmap(const Mapping &m) {
  if (m.locked) munlock(m.base, m.bytes);
  munmap(m.base, m.bytes);
}

class Pool;

struct Slab {
  Mapping map;
  std::vector<uint8_t *> free;  // part-size buffers of this slab not handed out
  size_t buffers = 0;
};

struct Ticket {
  aws_s3_buffer_ticket base;
  std::shared_ptr<Pool> pool;
  size_t size = 0;          // the buffer's capacity, as the CRT asked
  size_t charge = 0;        // what it occupies in the pool: a whole part buffer, or its own pages
  bool claimed = false;
  bool direct = false;      // data is a slice of a DirectSink: not pool memory, not accounted
  uint8_t *data = nullptr;
  Slab *slab = nullptr;     // part-size buffer from this slab
  Mapping own;              // odd-size buffer with its own mapping
  std::shared_ptr<ScatterMap> scatter;  // the GET stream's, if it has one
  std::shared_ptr<UploadLoan> loan;     // a lent slice of an upload's bytes: handed over full
  const aws_s3_meta_request *meta = nullptr;  // whose reservation it is
  // Upload bytes at part offsets [offset, offset + len) that are sent from the caller's memory at ptr
  // (take_lent), in part order; the loans they were lent under, each given back when the ticket is.
  struct Lent {
    size_t offset;
    const uint8_t *ptr;
    size_t len;
  };
  std::vector<Lent> lent;
  std::vector<std::shared_ptr<UploadLoan>> lent_loans;
  int pid = 0;
};

// Everything the CRT calls is noexcept: an exception must never unwind through C frames.
aws_byte_buf ticket_claim(aws_s3_buffer_ticket *t) noexcept;
#ifdef S3TORCH_CRT_TICKET_APPEND
int ticket_append(aws_s3_buffer_ticket *t, aws_byte_buf *buf, const aws_byte_cursor *data,
                  uint64_t part_start) noexcept;
#endif
#ifdef AWS_S3_S3TORCH_LENT_RANGES
bool ticket_take_lent(aws_s3_buffer_ticket *t, size_t offset, aws_byte_cursor data) noexcept;
int ticket_body_stream(aws_s3_buffer_ticket *t, const aws_byte_buf *buf, aws_input_stream **out) noexcept;
#endif
void ticket_zero(void *user_data) noexcept;
aws_future_s3_buffer_ticket *pool_reserve(aws_s3_buffer_pool *p, aws_s3_buffer_pool_reserve_meta meta) noexcept;
void pool_trim(aws_s3_buffer_pool *p) noexcept;
int pool_add_special_size(aws_s3_buffer_pool *, size_t) noexcept { return AWS_OP_SUCCESS; }
void pool_release_special_size(aws_s3_buffer_pool *, size_t) noexcept {}
uint64_t pool_derive_aligned(aws_s3_buffer_pool *, uint64_t size) noexcept { return size; }
void pool_zero(void *user_data) noexcept;

// Built field by field: the struct has one more entry with our aws-c-s3 edit than without it.
aws_s3_buffer_ticket_vtable make_ticket_vtable(bool scatter) {
  aws_s3_buffer_ticket_vtable v{};
  v.claim = ticket_claim;
#ifdef S3TORCH_CRT_TICKET_APPEND
  if (scatter) v.append = ticket_append;
#else
  (void)scatter;
#endif
#ifdef AWS_S3_S3TORCH_LENT_RANGES
  if (!scatter) {  // GET streams' tickets are never upload parts
    v.take_lent = ticket_take_lent;
    v.body_stream = ticket_body_stream;
  }
#endif
  return v;
}

aws_s3_buffer_ticket_vtable g_ticket_vtable = make_ticket_vtable(false);
aws_s3_buffer_ticket_vtable g_scatter_ticket_vtable = make_ticket_vtable(true);
aws_s3_buffer_pool_vtable g_pool_vtable = {pool_reserve,           pool_trim,
                                           pool_add_special_size,  pool_release_special_size,
                                           pool_derive_aligned,    nullptr,
                                           nullptr};

class Pool : public BufferPool, public std::enable_shared_from_this<Pool> {
 public:
  Pool(aws_allocator *allocator, size_t part_size, size_t limit)
      : allocator_(allocator), part_bytes_(round_up(part_size, page_size())), limit_(limit) {
    stats_.limit_bytes = limit;
    stats_.part_size = part_size;
    // Slabs of up to 64 MiB of part buffers (fewer, larger mappings register cheaply with CUDA), but
    // never more buffers per slab than the limit admits.
    size_t per_slab = std::max<size_t>(1, (64ull << 20) / part_bytes_);
    per_slab = std::min(per_slab, std::max<size_t>(1, limit / part_bytes_));
    slab_buffers_ = per_slab;
    stats_.slab_bytes = per_slab * part_bytes_;
    stats_.mlock_ok = true;
    c_pool_.vtable = &g_pool_vtable;
    c_pool_.impl = this;
  }

  ~Pool() override {
    if (self_pid_ != getpid()) return;  // a parent's pool in a forked child: its memory is not ours to touch
    for (auto &s : slabs_) unmap_slab(s->map);
  }

  // Called once, right after construction: the C struct's ref count owns a reference to us.
  aws_s3_buffer_pool *c_pool() {
    c_self_ = shared_from_this();
    aws_ref_count_init(&c_pool_.ref_count, this, pool_zero);
    return &c_pool_;
  }
  void drop_c_self() { c_self_.reset(); }

  uint64_t limit_bytes() const override { return limit_; }

  PoolStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    PoolStats s = stats_;
    s.pending_reservations = pending_.size();
    s.resident_bytes = resident_slab_bytes_locked();
    return s;
  }

  // Called by the CRT (any of its threads). Every reservation waits its turn in arrival order until
  // what its buffer will occupy fits under the limit, uploads' "can block" ones included: aws-c-s3
  // lets a pool defer those, and granting them past the limit is what made it soft. The buffer is
  // mapped here, before the ticket is handed out, so that a failed mapping fails the request.
  aws_future_s3_buffer_ticket *reserve(const aws_s3_buffer_pool_reserve_meta &meta) noexcept {
    aws_future_s3_buffer_ticket *future = aws_future_s3_buffer_ticket_new(allocator_);
    try {
      std::shared_ptr<ScatterMap> scatter;
      if (aws_s3_buffer_ticket *direct = route(meta, scatter)) {  // caller memory: no limit applies
        aws_future_s3_buffer_ticket_set_result_by_move(future, &direct);
        return future;
      }
      const size_t charge = charge_for(meta.size);
      if (charge > limit_) {
        aws_future_s3_buffer_ticket_set_error(future, AWS_ERROR_S3_PART_SIZE_EXCEEDS_MEMORY_LIMIT);
        return future;
      }
      Ticket *granted = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (pending_.empty() && stats_.reserved_bytes + charge <= limit_) {
          granted = grant_locked(meta.size, std::move(scatter), meta.meta_request);
        } else {
          pending_.push_back(Pending{aws_future_s3_buffer_ticket_acquire(future), meta.size, std::move(scatter),
                                     meta.meta_request});
          stats_.waits++;
        }
      }
      if (granted) hand_out(future, granted);
    } catch (...) {  // bad_alloc: fail this reservation, never the process
      if (!aws_future_s3_buffer_ticket_is_done(future)) aws_future_s3_buffer_ticket_set_error(future, AWS_ERROR_OOM);
    }
    return future;
  }

  // Records `data`, written at `offset` of t's part buffer, as sent from the caller's memory when it lies
  // inside the lent range registered for t's upload. Called by the CRT under its lock, in write order.
  bool take_lent(Ticket *t, size_t offset, aws_byte_cursor data) noexcept {
    if (lent_receivers_.load(std::memory_order_acquire) == 0) return false;  // no lock for plain writes
    std::lock_guard<std::recursive_mutex> lock(receivers_mu_);
    auto it = receivers_.find(t->meta);
    if (it == receivers_.end() || !it->second.lent) return false;
    LentRange &range = *it->second.lent;
    if (data.ptr < range.begin || data.ptr > range.end || data.len > size_t(range.end - data.ptr)) return false;
    if (!t->lent.empty() && offset < t->lent.back().offset + t->lent.back().len) return false;  // never out of order
    try {
      t->lent.reserve(t->lent.size() + 1);
      if (t->lent_loans.empty() || t->lent_loans.back() != range.loan) {
        t->lent_loans.reserve(t->lent_loans.size() + 1);
        range.loan->lend();
        t->lent_loans.push_back(range.loan);
      }
    } catch (...) {  // out of memory: the CRT copies these bytes instead
      return false;
    }
    Ticket::Lent *last = t->lent.empty() ? nullptr : &t->lent.back();
    if (last && last->offset + last->len == offset && last->ptr + last->len == data.ptr) {
      last->len += data.len;  // continues the previous piece, in the part and in memory
    } else {
      t->lent.push_back(Ticket::Lent{offset, data.ptr, data.len});  // room reserved above
    }
    range.taken += data.len;
    return true;
  }

  std::unique_lock<std::recursive_mutex> lock_receivers() override {
    return std::unique_lock<std::recursive_mutex>(receivers_mu_);
  }

  void add_receiver(const aws_s3_meta_request *meta, PoolReceiver receiver) override {
    std::lock_guard<std::recursive_mutex> lock(receivers_mu_);
    PoolReceiver &slot = receivers_[meta];
    lent_receivers_ += (receiver.lent != nullptr) - (slot.lent != nullptr);
    slot = std::move(receiver);
  }

  void remove_receiver(const aws_s3_meta_request *meta) override {
    std::lock_guard<std::recursive_mutex> lock(receivers_mu_);
    auto it = receivers_.find(meta);
    if (it == receivers_.end()) return;
    if (it->second.lent) lent_receivers_--;
    receivers_.erase(it);
  }

  // Registering pins (faults in) every page: the slabs mapped so far are registered outside the lock,
  // so that CRT threads taking and returning buffers meanwhile do not stall; trims wait until done.
  void set_registrar(std::shared_ptr<HostRegistrar> registrar) override {
    std::vector<Slab *> existing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (registrar_ || !registrar) return;
      registrar_ = registrar;
      registering_++;
      for (auto &slab : slabs_) existing.push_back(slab.get());
    }
    std::vector<char> ok(existing.size(), 0);
    for (size_t i = 0; i < existing.size(); ++i) {
      ok[i] = registrar->register_memory(existing[i]->map.base, existing[i]->map.bytes);
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < existing.size(); ++i) {
      existing[i]->map.registered = ok[i] != 0;
      note_registration_locked(existing[i]->map);
    }
    registering_--;
  }

  // The ticket's buffer was mapped when it was granted: claiming only counts it as in use.
  uint8_t *claim(Ticket *t) noexcept {
    if (t->direct) return t->data;
    std::lock_guard<std::mutex> lock(mu_);
    if (!t->claimed) {
      t->claimed = true;
      stats_.in_use_bytes += t->size;
    }
    return t->data;
  }

  void release(Ticket *t) noexcept {
    for (auto &loan : t->lent_loans) loan->give_back();  // nothing reads the lent memory any more
    if (t->direct) {  // caller memory: nothing to return to the pool
      if (t->loan) t->loan->give_back();
      return;
    }
    std::vector<std::pair<aws_future_s3_buffer_ticket *, Ticket *>> grants;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (t->claimed) stats_.in_use_bytes -= t->size;
      if (t->slab) {
        t->slab->free.push_back(t->data);  // capacity reserved at the slab's creation: cannot throw
      } else if (t->own.base) {
        note_mapped_locked(t->own, false);
        unmap(t->own);
      }
      stats_.reserved_bytes -= t->charge;
      // Grant waiting reservations in arrival order while they fit. Room for every grant is made
      // first, so that adding one cannot throw; without it (out of memory) a later release grants.
      bool room = true;
      try {
        grants.reserve(pending_.size());
      } catch (...) {
        room = false;
      }
      while (room && !pending_.empty() && stats_.reserved_bytes + charge_for(pending_.front().size) <= limit_) {
        Pending p = std::move(pending_.front());
        pending_.pop_front();
        if (aws_future_s3_buffer_ticket_is_done(p.future)) {  // the CRT gave up on it (cancelled)
          aws_future_s3_buffer_ticket_release(p.future);
          continue;
        }
        try {
          grants.emplace_back(p.future, grant_locked(p.size, std::move(p.scatter), p.meta));
        } catch (...) {  // the ticket itself could not be allocated
          aws_future_s3_buffer_ticket_set_error(p.future, AWS_ERROR_OOM);
          aws_future_s3_buffer_ticket_release(p.future);
        }
      }
    }
    for (auto &g : grants) {
      hand_out(g.first, g.second);
      aws_future_s3_buffer_ticket_release(g.first);
    }
  }

  void trim() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    trim_locked();
  }

  void trim_locked() {
    if (registering_) return;  // set_registrar is registering slabs outside the lock
    for (auto it = slabs_.begin(); it != slabs_.end();) {
      if ((*it)->free.size() == (*it)->buffers) {
        slab_buffer_total_ -= (*it)->buffers;
        note_mapped_locked((*it)->map, false);
        unmap_slab((*it)->map);
        it = slabs_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void fail_pending() noexcept {
    std::deque<Pending> pending;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending.swap(pending_);
    }
    for (auto &p : pending) {
      aws_future_s3_buffer_ticket_set_error(p.future, AWS_ERROR_S3_CANCELED);
      aws_future_s3_buffer_ticket_release(p.future);
    }
  }

 private:
  struct Pending {
    aws_future_s3_buffer_ticket *future;
    size_t size;
    std::shared_ptr<ScatterMap> scatter;
    const aws_s3_meta_request *meta;
  };

  // The registered receiver of the reservation's GET, if any: a ticket onto the next slice of its
  // DirectSink (null once the sink is full), or the stream's ScatterMap in `scatter`.
  aws_s3_buffer_ticket *route(const aws_s3_buffer_pool_reserve_meta &meta, std::shared_ptr<ScatterMap> &scatter) {
    uint8_t *data = nullptr;
    std::shared_ptr<UploadLoan> loan;
    {
      std::lock_guard<std::recursive_mutex> lock(receivers_mu_);
      auto it = receivers_.find(meta.meta_request);
      if (it == receivers_.end()) return nullptr;
      DirectSink *sink = it->second.sink;
      if (!sink) {
        scatter = it->second.scatter;
        return nullptr;
      }
      if (sink->assigned + meta.size > sink->size) return nullptr;
      uint64_t offset = g_direct_fault ? sink->size - sink->assigned - meta.size : sink->assigned;
      data = sink->base + offset;
      sink->assigned += meta.size;
      loan = sink->loan;
    }
    Ticket *t = new_ticket(meta.size);
    t->charge = 0;
    t->direct = true;
    t->data = data;
    if (loan) {
      loan->lend();
      t->loan = std::move(loan);
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.direct_tickets++;
    return &t->base;
  }

  Ticket *new_ticket(size_t size) {
    auto *t = new Ticket();
    t->base.vtable = &g_ticket_vtable;
    t->base.impl = t;
    aws_ref_count_init(&t->base.ref_count, t, ticket_zero);
    t->pool = shared_from_this();
    t->size = size;
    t->pid = self_pid_;
    return t;
  }

  // What a buffer of `size` bytes occupies: a whole part buffer of a slab, or (larger than a part)
  // a mapping of its own. Charging the occupancy, not the size, is what keeps the limit hard.
  size_t charge_for(size_t size) const { return size <= part_bytes_ ? part_bytes_ : round_up(size, page_size()); }

  Ticket *grant_locked(size_t size, std::shared_ptr<ScatterMap> scatter, const aws_s3_meta_request *meta) {
    Ticket *t = new_ticket(size);
    t->meta = meta;
    t->charge = charge_for(size);
    if (scatter) {
      t->scatter = std::move(scatter);
      t->base.vtable = &g_scatter_ticket_vtable;
      stats_.scatter_tickets++;
    }
    stats_.reserved_bytes += t->charge;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.reserved_bytes);
    stats_.tickets_granted++;
    return t;
  }

  // Gives a granted ticket its buffer and resolves the future with it, or fails the future (and
  // returns the charge) when no memory could be mapped.
  void hand_out(aws_future_s3_buffer_ticket *future, Ticket *t) noexcept {
    if (materialize(t)) {
      aws_s3_buffer_ticket *base = &t->base;
      // A future the CRT already failed (request cancelled) destroys the ticket, which returns it.
      aws_future_s3_buffer_ticket_set_result_by_move(future, &base);
      return;
    }
    log_lazy(AWS_LL_ERROR,
             [&] { return "could not map a " + std::to_string(t->size) + "-byte part buffer: the request fails"; });
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.map_failures++;
    }
    aws_s3_buffer_ticket_release(&t->base);  // returns the charge and grants what now fits
    aws_future_s3_buffer_ticket_set_error(future, AWS_ERROR_OOM);
  }

  // Maps (or takes from a slab) the ticket's buffer. Under the limit by construction: a ticket is
  // granted only when its charge fits, and mapped memory never exceeds what granted tickets occupy
  // plus free slab buffers, which a part-size ticket takes first.
  bool materialize(Ticket *t) noexcept {
    try {
      std::unique_lock<std::mutex> lock(mu_);
      if (t->charge == part_bytes_) {
        while (true) {
          if (Slab *slab = slab_with_free_locked()) {
            t->data = slab->free.back();
            slab->free.pop_back();
            t->slab = slab;
            return true;
          }
          size_t coming = stats_.mapped_bytes + mapping_bytes_;
          size_t room = coming < limit_ ? (limit_ - coming) / part_bytes_ : 0;
          if (room == 0) {
            if (mapping_bytes_ == 0) return false;  // cannot happen while charges are honest
            slab_cv_.wait(lock);  // another thread is mapping the buffers this ticket will get
            continue;
          }
          // Slabs grow geometrically (2, 2, 4, 8 ... buffers) so the first parts need not wait for a
          // large slab, and are mapped with the lock released: other threads must still be able to
          // return and take buffers meanwhile.
          size_t count = std::min({slab_buffers_, std::max<size_t>(2, slab_buffer_total_), room});
          // Allocated before the mapping starts: nothing below may throw while mapping_bytes_ counts it.
          auto slab = std::make_unique<Slab>();
          slab->free.reserve(count);
          slabs_.reserve(slabs_.size() + 1);
          mapping_bytes_ += count * part_bytes_;
          std::shared_ptr<HostRegistrar> registrar = registrar_;
          lock.unlock();
          Mapping m = map_bytes(count * part_bytes_);
          // Registration pins (faults in) every page of the slab: done outside the lock, once per slab.
          if (m.base && registrar) m.registered = registrar->register_memory(m.base, m.bytes);
          lock.lock();
          if (m.base && registrar) {
            note_registration_locked(m);
          } else if (m.base && registrar_) {  // set while this slab was being mapped
            register_slab_locked(m);
          }
          mapping_bytes_ -= count * part_bytes_;
          slab_cv_.notify_all();
          if (!m.base) return false;
          add_slab_locked(std::move(slab), m, count);
        }
      }
      size_t bytes = t->charge;
      if (stats_.mapped_bytes + mapping_bytes_ + bytes > limit_) trim_locked();  // free slabs make room
      lock.unlock();
      Mapping own = map_bytes(bytes);
      lock.lock();
      if (!own.base) return false;
      t->own = own;
      note_mapped_locked(t->own, true);
      t->data = t->own.base;
      return true;
    } catch (...) {
      return false;
    }
  }

  Slab *slab_with_free_locked() {
    for (auto &slab : slabs_) {
      if (!slab->free.empty()) return slab.get();
    }
    return nullptr;
  }

  // Slab pages in RAM (mincore): what the pool really costs, since pages fault in on first write.
  uint64_t resident_slab_bytes_locked() const {
    const size_t page = page_size();
    uint64_t pages = 0;
    std::vector<unsigned char> vec;
    for (auto &slab : slabs_) {
      vec.resize(slab->map.bytes / page);
      if (mincore(slab->map.base, slab->map.bytes, vec.data()) != 0) continue;
      for (unsigned char v : vec) pages += v & 1;
    }
    return pages * page;
  }

  void add_slab_locked(std::unique_ptr<Slab> slab, const Mapping &m, size_t count) {
    slab->map = m;
    slab->buffers = count;
    for (size_t i = count; i-- > 0;) slab->free.push_back(m.base + i * part_bytes_);
    note_mapped_locked(m, true);
    slab_buffer_total_ += count;
    slabs_.push_back(std::move(slab));
  }

  void register_slab_locked(Mapping &m) {
    m.registered = registrar_->register_memory(m.base, m.bytes);
    note_registration_locked(m);
  }

  void note_registration_locked(const Mapping &m) {
    if (m.registered) {
      stats_.registered_bytes += m.bytes;
    } else {
      stats_.registration_failures++;
    }
  }

  // Unregistered before it is unmapped: the GPU runtime must not keep a registration of memory that a
  // later mapping may reuse.
  void unmap_slab(Mapping &m) {
    if (m.registered) {
      registrar_->unregister_memory(m.base);
      stats_.registered_bytes -= m.bytes;
      m.registered = false;
    }
    unmap(m);
  }

  void note_mapped_locked(const Mapping &m, bool added) {
    if (added) {
      stats_.mapped_bytes += m.bytes;
      if (m.locked) stats_.locked_bytes += m.bytes;
      else stats_.mlock_ok = false;
    } else {
      stats_.mapped_bytes -= m.bytes;
      if (m.locked) stats_.locked_bytes -= m.bytes;
    }
  }

  aws_allocator *allocator_;
  const size_t part_bytes_;
  const size_t limit_;
  size_t slab_buffers_ = 1;
  mutable std::mutex mu_;
  std::condition_variable slab_cv_;
  size_t mapping_bytes_ = 0;      // being mapped right now, outside the lock
  size_t slab_buffer_total_ = 0;  // part buffers in all slabs
  PoolStats stats_;
  std::deque<Pending> pending_;
  std::vector<std::unique_ptr<Slab>> slabs_;
  std::recursive_mutex receivers_mu_;
  std::unordered_map<const aws_s3_meta_request *, PoolReceiver> receivers_;
  std::atomic<int> lent_receivers_{0};  // receivers_ with a lent range (take_lent skips the lock at 0)
  aws_s3_buffer_pool c_pool_{};
  std::shared_ptr<Pool> c_self_;
  std::shared_ptr<HostRegistrar> registrar_;  // set once (set_registrar), never cleared
  int registering_ = 0;                        // set_registrar registering existing slabs: no trim
  const pid_t self_pid_ = getpid();
};

aws_byte_buf ticket_claim(aws_s3_buffer_ticket *base) noexcept {
  auto *t = static_cast<Ticket *>(base->impl);
  uint8_t *data = t->pool->claim(t);
  aws_byte_buf buf{};
  buf.buffer = data;
  buf.capacity = t->size;
  buf.len = t->loan ? t->size : 0;  // a lent slice holds the upload's next bytes already
  buf.allocator = nullptr;  // not ours to free: the pool owns it
  return buf;
}

#ifdef S3TORCH_CRT_TICKET_APPEND
// The CRT's append of a GET part's body fragment, for tickets of streams with a ScatterMap. No
// exception may leave: it runs inside a CRT callback (the map's write throws none).
int ticket_append(aws_s3_buffer_ticket *base, aws_byte_buf *buf, const aws_byte_cursor *data,
                  uint64_t part_start) noexcept {
  auto *t = static_cast<Ticket *>(base->impl);
  if (buf->buffer != t->data || buf->allocator != nullptr || g_scatter_fault) {
    // Not this ticket's claimed buffer: appending plainly would skip the scatter and leave stale bytes
    // in the destinations while the consumer skips them. Fail the request instead.
    return aws_raise_error(AWS_ERROR_INVALID_STATE);
  }
  if (buf->capacity - buf->len < data->len) return aws_raise_error(AWS_ERROR_DEST_COPY_TOO_SMALL);
  t->scatter->write(part_start + buf->len, data->ptr, data->len, buf->buffer + buf->len);
  buf->len += data->len;
  return AWS_OP_SUCCESS;
}
#endif

#ifdef AWS_S3_S3TORCH_LENT_RANGES
bool ticket_take_lent(aws_s3_buffer_ticket *base, size_t offset, aws_byte_cursor data) noexcept {
  auto *t = static_cast<Ticket *>(base->impl);
  if (t->direct || t->scatter || t->pid != getpid()) return false;
  return t->pool->take_lent(t, offset, data);
}

// An upload part's body: its buffer's bytes, with the pieces the ticket took lent read from the caller's
// memory. Holds the ticket (and so the lent memory's loans) until the HTTP layer is done with it.
struct LentBodyStream {
  aws_input_stream base{};
  Ticket *t = nullptr;  // acquired: its buffer (data) and lent pieces
  size_t len = 0;
  size_t pos = 0;
  size_t piece = 0;  // the first lent piece that ends after pos
};

void lent_body_destroy(void *user_data) noexcept {
  auto *s = static_cast<LentBodyStream *>(user_data);
  aws_s3_buffer_ticket_release(&s->t->base);
  delete s;
}

void lent_body_place(LentBodyStream *s, size_t pos) {
  s->pos = pos;
  s->piece = 0;
  while (s->piece < s->t->lent.size() && s->t->lent[s->piece].offset + s->t->lent[s->piece].len <= pos) ++s->piece;
}

int lent_body_seek(aws_input_stream *stream, int64_t offset, aws_stream_seek_basis basis) noexcept {
  auto *s = static_cast<LentBodyStream *>(stream->impl);
  int64_t to = basis == AWS_SSB_BEGIN ? offset : int64_t(s->len) + offset;
  if (to < 0 || uint64_t(to) > s->len) return aws_raise_error(AWS_IO_STREAM_INVALID_SEEK_POSITION);
  lent_body_place(s, size_t(to));
  return AWS_OP_SUCCESS;
}

int lent_body_read(aws_input_stream *stream, aws_byte_buf *dest) noexcept {
  auto *s = static_cast<LentBodyStream *>(stream->impl);
  const auto &lent = s->t->lent;
  while (s->pos < s->len && dest->len < dest->capacity) {
    size_t room = dest->capacity - dest->len;
    const uint8_t *from;
    size_t n;
    if (s->piece < lent.size() && lent[s->piece].offset <= s->pos) {
      const Ticket::Lent &p = lent[s->piece];
      from = p.ptr + (s->pos - p.offset);
      n = std::min(room, p.offset + p.len - s->pos);
      if (s->pos + n == p.offset + p.len) ++s->piece;
    } else {
      size_t stop = s->piece < lent.size() ? lent[s->piece].offset : s->len;
      from = s->t->data + s->pos;
      n = std::min(room, stop - s->pos);
    }
    std::memcpy(dest->buffer + dest->len, from, n);
    dest->len += n;
    s->pos += n;
  }
  return AWS_OP_SUCCESS;
}

int lent_body_status(aws_input_stream *stream, aws_stream_status *status) noexcept {
  auto *s = static_cast<LentBodyStream *>(stream->impl);
  status->is_end_of_stream = s->pos >= s->len;
  status->is_valid = true;
  return AWS_OP_SUCCESS;
}

int lent_body_length(aws_input_stream *stream, int64_t *out) noexcept {
  *out = int64_t(static_cast<LentBodyStream *>(stream->impl)->len);
  return AWS_OP_SUCCESS;
}

const aws_input_stream_vtable g_lent_body_vtable = {lent_body_seek,   lent_body_read, lent_body_status,
                                                    lent_body_length, nullptr,        nullptr};

int ticket_body_stream(aws_s3_buffer_ticket *base, const aws_byte_buf *buf, aws_input_stream **out) noexcept {
  auto *t = static_cast<Ticket *>(base->impl);
  *out = nullptr;
  if (t->lent.empty()) return AWS_OP_SUCCESS;
  const Ticket::Lent &last = t->lent.back();
  if (buf->buffer != t->data || last.offset + last.len > buf->len || g_lent_body_fault) {
    // Not this ticket's buffer, or shorter than what was lent into it: sending it would send bytes that
    // were never written. Fail the part instead.
    return aws_raise_error(AWS_ERROR_INVALID_STATE);
  }
  auto *s = new (std::nothrow) LentBodyStream();
  if (!s) return aws_raise_error(AWS_ERROR_OOM);
  s->base.impl = s;
  s->base.vtable = &g_lent_body_vtable;
  aws_ref_count_init(&s->base.ref_count, s, lent_body_destroy);
  aws_s3_buffer_ticket_acquire(base);
  s->t = t;
  s->len = buf->len;
  lent_body_place(s, 0);
  *out = &s->base;
  return AWS_OP_SUCCESS;
}
#endif

void ticket_zero(void *user_data) noexcept {
  auto *t = static_cast<Ticket *>(user_data);
  if (t->pid != getpid()) return;  // a parent's ticket in a forked child: leak, never touch the pool
  t->pool->release(t);
  delete t;
}

aws_future_s3_buffer_ticket *pool_reserve(aws_s3_buffer_pool *p, aws_s3_buffer_pool_reserve_meta meta) noexcept {
  return static_cast<Pool *>(p->impl)->reserve(meta);
}

void pool_trim(aws_s3_buffer_pool *p) noexcept { static_cast<Pool *>(p->impl)->trim(); }

void pool_zero(void *user_data) noexcept {
  auto *pool = static_cast<Pool *>(user_data);
  // The client is gone: nothing will wait for pending reservations any more.
  pool->fail_pending();
  pool->drop_c_self();  // may destroy the pool unless tickets still hold it
}

}  // namespace

void set_direct_placement_fault(bool on) { g_direct_fault = on; }

void set_map_failures(int count) { g_map_failures = count; }

void set_scatter_append_fault(bool on) { g_scatter_fault = on; }

void set_lent_body_fault(bool on) { g_lent_body_fault = on; }

aws_s3_buffer_pool *pool_factory(aws_allocator *allocator, aws_s3_buffer_pool_config config,
                                 void *user_data) {
  auto *ctx = static_cast<PoolFactoryContext *>(user_data);
  size_t limit = ctx->memory_limit ? ctx->memory_limit : config.memory_limit;
  size_t part = config.part_size ? config.part_size : (8u << 20);
  if (limit < part) {
    aws_raise_error(AWS_ERROR_S3_PART_SIZE_EXCEEDS_MEMORY_LIMIT);
    return nullptr;
  }
  auto pool = std::make_shared<Pool>(allocator, part, limit);
  ctx->created = pool;
  return pool->c_pool();
}

}  // namespace s3torch
