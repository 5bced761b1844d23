#include "s3torch/prefault.hpp"

#include "s3torch/runtime.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace s3torch {

namespace {
// One madvise per step: the thread checks for a stop between steps, and the transfer's first parts
// find their pages mapped soon after it starts.
constexpr size_t kStep = size_t(8) << 20;
}  // namespace

Prefault::Prefault(const std::vector<Span> &spans, std::atomic<uint64_t> *populated) : pid_(getpid()) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  // Whole pages inside each span only: the bytes around one belong to someone else.
  std::vector<std::pair<uintptr_t, uintptr_t>> pages;
  size_t total = 0;
  for (const Span &s : spans) {
    const auto at = reinterpret_cast<uintptr_t>(s.data);
    const uintptr_t first = (at + page - 1) / page * page;
    const uintptr_t last = (at + s.size) / page * page;
    if (last <= first) continue;
    pages.emplace_back(first, last);
    total += last - first;
  }
  if (total < kMinBytes) return;
  done_ = false;
  try {
    thread_ = std::thread([this, page, pages = std::move(pages), populated] {
      struct Done {
        std::atomic<bool> &flag;
        ~Done() { flag = true; }
      } done{done_};
      std::vector<unsigned char> resident(kStep / page);
      for (const auto &[first, last] : pages) {
        for (uintptr_t p = first; p < last; p += kStep) {
          const size_t n = static_cast<size_t>(std::min<uintptr_t>(kStep, last - p));
          // Memory the caller already wrote (a model's initialized weights) needs nothing: a residency
          // check costs a thirtieth of a populate call walking mapped pages.
          if (mincore(reinterpret_cast<void *>(p), n, resident.data()) == 0 &&
              std::all_of(resident.begin(), resident.begin() + n / page, [](unsigned char r) { return r & 1; })) {
            if (stop_.load(std::memory_order_relaxed)) return;
            continue;
          }
          // Fails where the kernel lacks it (EINVAL) or the memory cannot be (EFAULT, ENOMEM): the
          // transfer then faults its pages in as it writes them.
          if (madvise(reinterpret_cast<void *>(p), n, MADV_POPULATE_WRITE) != 0) return;
          if (populated) populated->fetch_add(n, std::memory_order_relaxed);
          if (stop_.load(std::memory_order_relaxed)) return;  // after a step: a started thread maps some
        }
      }
    });
  } catch (...) {
    // No thread (resource limits): the transfer faults its pages in as it writes them.
    done_ = true;
  }
}

Prefault::~Prefault() {
  stop_.store(true, std::memory_order_relaxed);
  if (!thread_.joinable()) return;
  if (forked_since(pid_)) {
    new std::thread(std::move(thread_));  // leaked: joining (or dropping) a parent's thread is undefined
    return;
  }
  thread_.join();
}

bool Prefault::supported() {
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void *p = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  const bool ok = madvise(p, page, MADV_POPULATE_WRITE) == 0;
  munmap(p, page);
  return ok;
}

}  // namespace s3torch
