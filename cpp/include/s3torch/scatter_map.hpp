#pragma once
// Chosen object ranges of a GET stream written straight into caller memory as its parts arrive.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <vector>

namespace s3torch {

// Object bytes [start, end) of a GET stream that go to dst instead of the part buffer.
struct ScatterRange {
  uint64_t start = 0;
  uint64_t end = 0;
  uint8_t *dst = nullptr;
};

// The ranges of one GET stream whose bytes its parts write straight into caller memory (a DCP
// load's tensors) as they arrive from the socket: one copy, no extra request. The part buffer keeps
// its layout (the stream still hands out whole parts); at scattered offsets it holds stale bytes,
// which the consumer skips. Called on CRT threads for every body fragment of the stream's parts.
class ScatterMap {
 public:
  explicit ScatterMap(std::vector<ScatterRange> ranges);  // sorted and disjoint
  // `data` holds object bytes [offset, offset + n); bytes outside the ranges go to part[0, n).
  void write(uint64_t offset, const uint8_t *data, size_t n, uint8_t *part);
  // After this returns no byte is written to a destination again (they go to the part buffer).
  void revoke();
  const std::vector<ScatterRange> &ranges() const { return ranges_; }
  // Adds up the bytes scattered there (set before the GET starts).
  void set_counter(std::shared_ptr<std::atomic<uint64_t>> counter) { counter_ = std::move(counter); }

 private:
  std::shared_mutex mu_;  // writers share it; revoke takes it alone
  bool revoked_ = false;
  std::vector<ScatterRange> ranges_;
  std::shared_ptr<std::atomic<uint64_t>> counter_;
};

}  // namespace s3torch
