#include "s3torch/crt_log.hpp"

#include <aws/common/logging.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <mutex>

#include "s3torch/runtime.hpp"

namespace s3torch {

namespace {

constexpr size_t kMaxQueued = 10000;

// synced_data: the queue and the dropped count, guarded by mu.
std::mutex g_mu;
std::condition_variable g_cv;
std::deque<LogRecord> g_queue;
uint64_t g_dropped = 0;
std::atomic<int> g_level{AWS_LL_NONE};
bool g_installed = false;

// Queues one record, or counts it dropped when the queue is full; a record that cannot be
// allocated is dropped too (noexcept: CRT threads and destructors call this).
void enqueue(int level, const char *subject, const char *text) noexcept {
  try {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_queue.size() >= kMaxQueued) {
      g_dropped++;
      return;
    }
    g_queue.push_back(LogRecord{level, subject, text});
  } catch (...) {
    return;
  }
  g_cv.notify_one();
}

// On CRT threads (and ours).
int log_fn(aws_logger *, aws_log_level level, aws_log_subject_t subject, const char *format, ...) noexcept {
  char text[2048];
  va_list args;
  va_start(args, format);
  int n = std::vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  if (n >= 0) enqueue(static_cast<int>(level), aws_log_subject_name(subject), text);
  return AWS_OP_SUCCESS;
}

aws_log_level get_level_fn(aws_logger *, aws_log_subject_t) noexcept {
  return static_cast<aws_log_level>(g_level.load(std::memory_order_relaxed));
}

void clean_up_fn(aws_logger *) noexcept {}

int set_level_fn(aws_logger *, aws_log_level level) noexcept {
  g_level = static_cast<int>(level);
  return AWS_OP_SUCCESS;
}

aws_logger_vtable g_vtable = {log_fn, get_level_fn, clean_up_fn, set_level_fn};
aws_logger g_logger = {&g_vtable, nullptr, nullptr};

}  // namespace

void set_crt_log_level(int level) {
  if (level < AWS_LL_NONE) level = AWS_LL_NONE;
  if (level > AWS_LL_TRACE) level = AWS_LL_TRACE;
  Runtime::get();  // the CRT library is initialized before a logger is set
  std::lock_guard<std::mutex> lock(g_mu);
  g_level = level;
  if (!g_installed) {
    g_logger.allocator = aws_default_allocator();
    aws_logger_set(&g_logger);
    g_installed = true;
  }
}

int crt_log_level() { return g_level.load(); }

std::vector<LogRecord> wait_crt_log_records(int timeout_ms) {
  std::unique_lock<std::mutex> lock(g_mu);
  g_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [] { return !g_queue.empty(); });
  std::vector<LogRecord> out(std::make_move_iterator(g_queue.begin()), std::make_move_iterator(g_queue.end()));
  g_queue.clear();
  return out;
}

bool log_enabled(int level) { return level <= g_level.load(std::memory_order_relaxed); }

void log_event(int level, const std::string &text) noexcept {
  if (log_enabled(level)) enqueue(level, "s3torch", text.c_str());
}

uint64_t crt_log_dropped() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_dropped;
}

}  // namespace s3torch
