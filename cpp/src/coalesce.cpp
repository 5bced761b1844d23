#include "s3torch/coalesce.hpp"

namespace s3torch {

std::vector<SpanGroup> coalesce(const std::vector<ByteSpan> &spans, double max_gap, CoalesceIssue &issue) {
  issue = CoalesceIssue{};
  std::vector<SpanGroup> groups;
  bool have_previous = false;
  size_t previous = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    const ByteSpan &s = spans[i];
    if (s.end < s.start) {
      issue = CoalesceIssue{CoalesceIssue::kEndBeforeStart, i, i};
      return {};
    }
    if (s.end == s.start) continue;
    if (have_previous) {
      const ByteSpan &p = spans[previous];
      if (s.start < p.start) {
        issue = CoalesceIssue{CoalesceIssue::kUnsorted, i, previous};
        return {};
      }
      if (s.start < p.end) {
        issue = CoalesceIssue{CoalesceIssue::kOverlapping, i, previous};
        return {};
      }
      if (static_cast<double>(s.start - p.end) > max_gap) {
        groups.push_back(SpanGroup{s.start, s.end, i, i + 1});
      }
    } else {
      groups.push_back(SpanGroup{s.start, s.end, i, i + 1});
    }
    groups.back().end = s.end;
    groups.back().last = i + 1;
    have_previous = true;
    previous = i;
  }
  return groups;
}

}  // namespace s3torch
