#include "s3torch/prefault.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace s3torch {

namespace {
// One madvise per step: the thread checks for a stop between steps, and the transfer's first parts
// find their pages mapped soon after it starts.
constexpr size_t kStep = size_t(8) << 20;
}  // namespace

Prefault::Prefault(void *data, size_t size, std::atomic<uint64_t> *populated) {
  if (size < kMinBytes) return;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto at = reinterpret_cast<uintptr_t>(data);
  // Whole pages inside the range only: the bytes around it belong to someone else.
  const uintptr_t first = (at + page - 1) / page * page;
  const uintptr_t last = (at + size) / page * page;
  if (last <= first) return;
  try {
    thread_ = std::thread([this, first, last, populated] {
      for (uintptr_t p = first; p < last && !stop_.load(std::memory_order_relaxed); p += kStep) {
        const size_t n = static_cast<size_t>(std::min<uintptr_t>(kStep, last - p));
        if (madvise(reinterpret_cast<void *>(p), n, MADV_POPULATE_WRITE) != 0) return;  // unsupported: stop
        if (populated) populated->fetch_add(n, std::memory_order_relaxed);
      }
    });
  } catch (...) {
    // No thread (resource limits): the transfer faults its pages in as it writes them.
  }
}

Prefault::~Prefault() {
  stop_.store(true, std::memory_order_relaxed);
  if (thread_.joinable()) thread_.join();
}

}  // namespace s3torch
