#include "s3torch/scatter_map.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>

namespace s3torch {

// write() runs on the CRT's event-loop threads (one per part in flight, concurrently); revoke() on
// the consumer's thread when it closes the stream.
ScatterMap::ScatterMap(std::vector<ScatterRange> ranges) : ranges_(std::move(ranges)) {}

void ScatterMap::write(uint64_t offset, const uint8_t *data, size_t n, uint8_t *part) {
  const uint64_t end = offset + n;
  uint64_t pos = offset;  // bytes before pos are written
  uint64_t scattered = 0;
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (!revoked_) {
      auto it = std::upper_bound(ranges_.begin(), ranges_.end(), offset,
                                 [](uint64_t o, const ScatterRange &r) { return o < r.end; });
      for (; it != ranges_.end() && it->start < end; ++it) {
        uint64_t a = std::max(pos, it->start), b = std::min(end, it->end);
        if (a > pos) std::memcpy(part + (pos - offset), data + (pos - offset), a - pos);
        std::memcpy(it->dst + (a - it->start), data + (a - offset), b - a);  // socket -> destination
        scattered += b - a;
        pos = b;
      }
    }
  }
  if (pos < end) std::memcpy(part + (pos - offset), data + (pos - offset), end - pos);
  if (scattered && counter_) counter_->fetch_add(scattered, std::memory_order_relaxed);
}

void ScatterMap::revoke() {
  std::unique_lock<std::shared_mutex> lock(mu_);
  revoked_ = true;
}

}  // namespace s3torch
