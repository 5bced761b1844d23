#pragma once
// The CRT's log messages, for Python's `logging`. The CRT calls our logger on its own threads; each
// message it does not filter out is formatted and queued (bounded: past the bound messages are
// dropped and counted), and a consumer thread of the Python layer takes them off the queue with
// wait_records(). Off (AWS_LL_NONE) the CRT's level check stops every call before any formatting.
#include <cstdint>
#include <string>
#include <vector>

namespace s3torch {

struct LogRecord {
  int level;  // aws_log_level: 1 fatal ... 6 trace
  std::string subject;
  std::string message;
};

// Sets the level of the CRT's messages we receive (aws_log_level, 0: none); installs our logger
// the first time. Process-wide.
void set_crt_log_level(int level);
int crt_log_level();
// Waits up to timeout_ms for records; returns what is queued (possibly nothing). Thread-safe.
std::vector<LogRecord> wait_crt_log_records(int timeout_ms);
uint64_t crt_log_dropped();

// Our own events (retries, fallbacks, cancels) into the same queue, subject "s3torch", when the level
// admits them. Never throws.
bool log_enabled(int level);
void log_event(int level, const std::string &text) noexcept;
// log_event(level, make()) when the level admits it: the text is built only then, and whatever
// building it throws is swallowed (callers include destructors and CRT callbacks).
template <class Make>
void log_lazy(int level, Make &&make) noexcept {
  if (!log_enabled(level)) return;
  try {
    log_event(level, make());
  } catch (...) {
  }
}

}  // namespace s3torch
