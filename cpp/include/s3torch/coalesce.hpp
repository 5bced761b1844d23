#pragma once
// Grouping of a file's sorted byte ranges into ranged GETs: ranges whose gap is at most `max_gap`
// share one GET. The DCP-optimized reader's coalesce_ranges runs on this (plans have 100k items).
#include <cstddef>
#include <cstdint>
#include <vector>

namespace s3torch {

struct ByteSpan {
  uint64_t start = 0;
  uint64_t end = 0;  // exclusive
};

// One GET: object bytes [start, end), holding the non-empty spans among spans[first, last).
struct SpanGroup {
  uint64_t start = 0;
  uint64_t end = 0;
  size_t first = 0;
  size_t last = 0;
};

// Why coalesce refused its input, and the index of the span it refused.
struct CoalesceIssue {
  enum Kind { kNone, kEndBeforeStart, kUnsorted, kOverlapping } kind = kNone;
  size_t index = 0;  // the offending span; for kUnsorted/kOverlapping, `previous` is the one before it
  size_t previous = 0;
};

// Groups `spans` (sorted by start, non-overlapping; empty ones are skipped: nothing to fetch) so that
// a gap longer than max_gap (a double: infinity merges everything) starts a new group. On bad input
// returns no groups and sets `issue`. O(n), no allocation beyond the result.
std::vector<SpanGroup> coalesce(const std::vector<ByteSpan> &spans, double max_gap, CoalesceIssue &issue);

}  // namespace s3torch
