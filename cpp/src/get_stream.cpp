#include "s3torch/get_stream.hpp"

#include <aws/s3/s3_buffer_pool.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "internal.hpp"
#include "s3torch/crt_log.hpp"

namespace s3torch {

// ---------------------------------------------------------------------------------------------
// BufferHold

BufferHold::BufferHold(aws_s3_buffer_ticket *ticket) : ticket_(ticket), pid_(getpid()) {}

BufferHold::BufferHold(const uint8_t *data, size_t size) : owned_(new uint8_t[size ? size : 1]), pid_(getpid()) {
  if (size) std::memcpy(owned_.get(), data, size);
}

BufferHold::~BufferHold() {
  if (ticket_ && pid_ == getpid()) aws_s3_buffer_ticket_release(ticket_);
}

// ---------------------------------------------------------------------------------------------
// State callbacks (CRT threads)

void GetStream::State::on_headers(const aws_http_headers *headers, int status_code) {
  std::string rid = header_value(headers, "x-amz-request-id");
  std::optional<uint64_t> size;
  std::string content_range = header_value(headers, "Content-Range");  // "bytes a-b/total"
  size_t slash = content_range.rfind('/');
  if (slash != std::string::npos && content_range.compare(slash + 1, 1, "*") != 0) {
    size = std::strtoull(content_range.c_str() + slash + 1, nullptr, 10);
  } else if (status_code == 200 && !start && !end) {
    std::string length = header_value(headers, "Content-Length");
    if (!length.empty()) size = std::strtoull(length.c_str(), nullptr, 10);
  }
  std::lock_guard<std::mutex> lock(mu);
  if (!rid.empty()) request_id = rid;
  if (size) object_size = size;
}

int GetStream::State::on_body(const aws_byte_cursor *body, uint64_t range_start, aws_s3_buffer_ticket *ticket) {
  if (body->len == 0) return AWS_OP_SUCCESS;
  // A scattered body always comes in a pool ticket (our append wrote its ranges); one without would
  // have skipped the scatter, leaving stale bytes where the consumer skips: fail instead.
  if (scatter && !ticket) return aws_raise_error(AWS_ERROR_INVALID_STATE);
  Chunk c;
  if (ticket) {
    // Zero copy: keep the part buffer alive for as long as the consumer holds the chunk.
    c.hold = std::make_shared<BufferHold>(aws_s3_buffer_ticket_acquire(ticket));
    c.data = body->ptr;
  } else {
    auto hold = std::make_shared<BufferHold>(body->ptr, body->len);
    c.data = hold->owned_data();
    c.hold = std::move(hold);
    owner->counters->chunk_copies++;
  }
  c.size = body->len;
  c.offset = range_start;
  c.queued_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch()).count();
  owner->counters->bytes_downloaded += body->len;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (closed) return aws_raise_error(AWS_ERROR_S3_CANCELED);
    queue.push_back(std::move(c));
  }
  cv.notify_all();
  return AWS_OP_SUCCESS;
}

void GetStream::State::on_finished() {}

void GetStream::State::consumed(uint64_t n, bool whole) {
  uint64_t open;
  {
    std::lock_guard<std::mutex> lock(mu);
    unreported += n;
    if (!whole) return;
    open = unreported;
    unreported = 0;
  }
  if (open && meta) aws_s3_meta_request_increment_read_window(meta, open);
}

void GetStream::State::settle_error(std::unique_lock<std::mutex> &lock) {
  if (settled || crt_error == 0) return;
  settled = true;
  // The CRT fetches a whole object with a first ranged GET; servers that answer an empty object's
  // range with a bare 416 (no Content-Range) make that fail. A HEAD tells whether the object is
  // simply empty, which is a successful, empty stream.
  if (status == 416 && !start && !end) {
    lock.unlock();
    bool empty = false;
    try {
      auto head = run_simple(owner, "HeadObject", "HEAD", bucket, key, "", {});
      empty = head->content_length == "0";
    } catch (...) {
    }
    lock.lock();
    if (empty) {
      crt_error = 0;
      object_size = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GetStream

GetStream::GetStream(std::shared_ptr<State> state) : st_(std::move(state)) {}

GetStream::~GetStream() {
  if (leak_if_forked(st_)) return;
  close();
  if (st_->meta) aws_s3_meta_request_release(st_->meta);
}

void GetStream::close() {
  std::deque<Chunk> dropped;
  aws_s3_meta_request *cancel = nullptr;
  {
    std::lock_guard<std::mutex> lock(st_->mu);
    if (st_->closed) return;
    st_->closed = true;
    if (forked_since(st_->owner->pid)) {  // the parent's request and chunks: leave them untouched
      new std::deque<Chunk>(std::move(st_->queue));
      return;
    }
    dropped.swap(st_->queue);
    if (!st_->finished) cancel = st_->meta;
  }
  if (cancel) {
    log_lazy(AWS_LL_DEBUG, [&] {
      return "cancel: GetObject s3://" + st_->bucket + "/" + st_->key + " " + st_->range + " closed before its end";
    });
    aws_s3_meta_request_cancel(cancel);
  }
  // Parts still arriving after the cancel must not write into the caller's memory any more.
  if (st_->scatter) st_->scatter->revoke();
  st_->cv.notify_all();
  // `dropped` releases its tickets here, outside the lock (releasing can grant waiting reservations).
}

std::optional<Chunk> GetStream::next(size_t max) {
  check_same_process(*st_);
  if (max == 0) throw UsageError("next: a chunk of at most 0 bytes was asked for");
  std::unique_lock<std::mutex> lock(st_->mu);
  st_->cv.wait(lock, [&] { return !st_->queue.empty() || st_->finished || st_->closed; });
  if (st_->closed) throw UsageError("read from a closed stream (s3://" + st_->bucket + "/" + st_->key + ")");
  if (!st_->queue.empty()) {
    Chunk c = std::move(st_->queue.front());
    st_->queue.pop_front();
    bool whole = c.size <= max;
    if (!whole) {  // hand out the front, keep the rest queued (both hold the part buffer)
      st_->queue.push_front(c.tail(max));
      c.size = max;
    }
    st_->position = c.offset + c.size;
    lock.unlock();
    st_->consumed(c.size, whole);
    return c;
  }
  st_->settle_error(lock);
  if (st_->crt_error != 0) throw st_->error();
  return std::nullopt;
}

size_t GetStream::read_into(uint8_t *dst, size_t n) { return consume(dst, n); }

size_t GetStream::skip(size_t n) { return consume(nullptr, n); }

size_t GetStream::consume(uint8_t *dst, size_t n) {
  check_same_process(*st_);
  size_t done = 0;
  while (done < n) {
    Chunk c;
    {
      std::unique_lock<std::mutex> lock(st_->mu);
      st_->cv.wait(lock, [&] { return !st_->queue.empty() || st_->finished || st_->closed; });
      if (st_->closed) throw UsageError("read from a closed stream (s3://" + st_->bucket + "/" + st_->key + ")");
      if (st_->queue.empty()) {
        st_->settle_error(lock);
        if (st_->crt_error != 0) throw st_->error();
        break;
      }
      c = std::move(st_->queue.front());
      st_->queue.pop_front();
    }
    size_t k = c.size < n - done ? c.size : n - done;
    if (dst) std::memcpy(dst + done, c.data, k);  // the one copy: part buffer -> caller's buffer
    done += k;
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      st_->position = c.offset + k;
      if (k < c.size) st_->queue.push_front(c.tail(k));
    }
    st_->consumed(k, k == c.size);
  }
  return done;
}

size_t GetStream::peek(uint8_t *dst, size_t n) {
  check_same_process(*st_);
  std::unique_lock<std::mutex> lock(st_->mu);
  auto queued = [&] {
    size_t q = 0;
    for (const Chunk &c : st_->queue) q += c.size;
    return q;
  };
  st_->cv.wait(lock, [&] { return st_->finished || st_->closed || queued() >= n; });
  if (st_->closed) throw UsageError("read from a closed stream (s3://" + st_->bucket + "/" + st_->key + ")");
  size_t done = 0;
  for (const Chunk &c : st_->queue) {
    if (done == n) break;
    size_t k = c.size < n - done ? c.size : n - done;
    std::memcpy(dst + done, c.data, k);  // a few KiB of headers, not the hot path
    done += k;
  }
  if (done < n) {  // finished early: by error, or the stream really ends here
    st_->settle_error(lock);
    if (st_->crt_error != 0) throw st_->error();
  }
  return done;
}

uint64_t GetStream::remaining() {
  check_same_process(*st_);
  std::unique_lock<std::mutex> lock(st_->mu);
  st_->cv.wait(lock, [&] { return st_->object_size || st_->finished || st_->closed; });
  if (st_->closed) throw UsageError("read from a closed stream (s3://" + st_->bucket + "/" + st_->key + ")");
  if (!st_->object_size) {
    st_->settle_error(lock);
    if (st_->crt_error != 0) throw st_->error();
  }
  uint64_t stop = st_->object_size.value_or(st_->position);
  if (st_->end && *st_->end < stop) stop = *st_->end;
  if (!st_->object_size) {  // finished without headers (empty range): what is queued is all there is
    stop = st_->position;
    for (const Chunk &c : st_->queue) stop += c.size;
  }
  return stop > st_->position ? stop - st_->position : 0;
}

uint64_t GetStream::tell() const {
  std::lock_guard<std::mutex> lock(st_->mu);
  return st_->position;
}

const std::string &GetStream::bucket() const { return st_->bucket; }
const std::string &GetStream::key() const { return st_->key; }
std::optional<uint64_t> GetStream::start() const { return st_->start; }
std::optional<uint64_t> GetStream::end() const { return st_->end; }

std::optional<uint64_t> GetStream::object_size() const {
  std::lock_guard<std::mutex> lock(st_->mu);
  return st_->object_size;
}

bool GetStream::closed() const {
  std::lock_guard<std::mutex> lock(st_->mu);
  return st_->closed;
}

}  // namespace s3torch
