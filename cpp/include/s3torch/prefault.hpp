#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <sys/types.h>
#include <vector>

namespace s3torch {

// Maps in fresh memory that a transfer is about to fill, from a thread of its own that runs ahead of
// the transfer. The kernel populates a range in one call (MADV_POPULATE_WRITE) for about 70% of the
// CPU the same pages cost when each first write traps (0.43 vs 0.60 s per GiB on the development VM),
// and the event-loop threads receiving the bytes no longer stop on page faults. Pages already mapped
// are left as they are; the transfer may write anywhere in the range meanwhile. Only for ranges of at
// least kMinBytes (a thread costs tens of microseconds). On kernels without it (before 5.14), nothing.
class Prefault {
 public:
  static constexpr size_t kMinBytes = size_t(32) << 20;

  struct Span {
    void *data;
    size_t size;
  };

  // Maps in the spans' whole pages, in order, if they add up to at least kMinBytes. `populated` (may
  // be null) is increased by the bytes mapped in.
  explicit Prefault(const std::vector<Span> &spans, std::atomic<uint64_t> *populated = nullptr);
  Prefault(void *data, size_t size, std::atomic<uint64_t> *populated = nullptr)
      : Prefault(std::vector<Span>{{data, size}}, populated) {}
  ~Prefault();  // stops at the next step and waits for the thread
  bool finished() const { return done_.load(); }  // the thread has stopped, or never started
  static bool supported();  // whether this kernel maps memory in on request (MADV_POPULATE_WRITE)
  Prefault(const Prefault &) = delete;
  Prefault &operator=(const Prefault &) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{true};
  std::thread thread_;
  pid_t pid_;  // a forked child has no such thread: it must not wait for it
};

}  // namespace s3torch
