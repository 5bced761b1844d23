#include "s3torch/direct_get.hpp"

#include <aws/s3/s3_client.h>

#include "internal.hpp"
#include "s3torch/crt_log.hpp"

namespace s3torch {

// ---------------------------------------------------------------------------------------------
// State callbacks (CRT threads)

int DirectGet::State::on_body(const aws_byte_cursor *body, uint64_t range_start, aws_s3_buffer_ticket *) {
  if (body->len == 0) return AWS_OP_SUCCESS;
  // The body is the part buffer the CRT appended the response to: in place, it is already where it
  // belongs and there is nothing to copy.
  bool in_range = range_start >= start && range_start - start <= sink.size && body->len <= sink.size - (range_start - start);
  bool in_place = in_range && body->ptr == sink.base + (range_start - start);
  std::lock_guard<std::mutex> lock(mu);
  if (!in_place) {
    misplaced = true;
    return aws_raise_error(AWS_ERROR_S3_CANCELED);
  }
  landed += body->len;
  owner->counters->bytes_downloaded += body->len;
  owner->counters->direct_bytes += body->len;
  return AWS_OP_SUCCESS;
}

namespace {

S3Error incomplete(const DirectGet::State &st, uint64_t got) {
  return S3Error("GetObject s3://" + st.bucket + "/" + st.key + ": the response ended after " +
                     std::to_string(got) + " of " + std::to_string(st.sink.size) + " bytes",
                 "GetObject", st.bucket, st.key, 0, "IncompleteBody", "", 0);
}

S3Error cancelled(const DirectGet::State &st) {
  return S3Error("GetObject s3://" + st.bucket + "/" + st.key + ": cancelled", "GetObject", st.bucket, st.key, 0,
                 "Cancelled", "", 0);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DirectGet

DirectGet::DirectGet(std::shared_ptr<State> state) : st_(std::move(state)) {}

DirectGet::~DirectGet() {
  if (leak_if_forked(st_)) return;
  try {
    cancel();
  } catch (...) {  // cancel only throws in a forked child, which leak_if_forked handled
  }
}

void DirectGet::settle() {
  std::unique_lock<std::mutex> lock(st_->mu);
  st_->cv.wait(lock, [&] { return st_->finished; });
  aws_s3_meta_request *meta = st_->meta;
  st_->meta = nullptr;
  lock.unlock();
  if (meta) aws_s3_meta_request_release(meta);
  lock.lock();
  // Shut down means no request of this GET exists any more: none can write to the memory.
  st_->cv.wait(lock, [&] { return st_->shut_down; });
}

void DirectGet::cancel() {
  check_same_process(*st_);
  aws_s3_meta_request *running = nullptr;
  {
    std::unique_lock<std::mutex> lock(st_->mu);
    if (st_->ok) return;
    st_->cancelled = true;
    // Our own reference, taken under the lock: a concurrent wait() may release the stored one as soon
    // as the request finishes.
    if (!st_->finished && st_->meta) running = aws_s3_meta_request_acquire(st_->meta);
    // A fallback re-download writing into the memory: close it, then wait until wait() has stopped
    // copying, so that nothing writes to the memory once cancel returns.
    if (st_->fallback) {
      st_->fallback->close();
      st_->cv.wait(lock, [&] { return st_->fallback == nullptr; });
    }
  }
  if (running) {
    log_lazy(AWS_LL_DEBUG, [&] {
      return "cancel: GetObject s3://" + st_->bucket + "/" + st_->key + " " + st_->range + " into caller memory";
    });
    aws_s3_meta_request_cancel(running);
    aws_s3_meta_request_release(running);
  }
  settle();
}

void DirectGet::wait() {
  check_same_process(*st_);
  settle();
  std::unique_lock<std::mutex> lock(st_->mu);
  if (st_->ok) return;
  if (st_->misplaced && !st_->cancelled) {
    // Redo the range as an ordinary stream, copied in: the in-place parts may sit at wrong offsets.
    // Registered while it runs, so that cancel() can stop it and wait for the last copy.
    lock.unlock();
    std::shared_ptr<GetStream> stream =
        start_get(st_->owner, st_->bucket, st_->key, st_->start, end(), nullptr, st_->pin);
    lock.lock();
    if (st_->cancelled) {
      lock.unlock();
      stream.reset();
      throw cancelled(*st_);
    }
    st_->fallback = stream.get();
    st_->owner->counters->direct_fallbacks++;
    log_lazy(AWS_LL_DEBUG, [&] {
      return "fallback: GetObject s3://" + st_->bucket + "/" + st_->key + " " + st_->range +
             ": a part landed out of place, the range is read again as a stream";
    });
    lock.unlock();
    size_t got = 0;
    std::exception_ptr failed;
    try {
      got = stream->read_into(st_->sink.base, st_->sink.size);
    } catch (...) {
      failed = std::current_exception();
    }
    lock.lock();
    st_->fallback = nullptr;
    st_->cv.notify_all();
    if (st_->cancelled) throw cancelled(*st_);
    if (failed) std::rethrow_exception(failed);
    if (got != st_->sink.size) throw incomplete(*st_, got);
    st_->ok = true;
    return;
  }
  if (st_->crt_error != 0) throw st_->error();
  if (st_->landed != st_->sink.size) throw incomplete(*st_, st_->landed);
  st_->ok = true;
}

bool DirectGet::done() const {
  std::lock_guard<std::mutex> lock(st_->mu);
  return st_->finished;
}

const std::string &DirectGet::bucket() const { return st_->bucket; }
const std::string &DirectGet::key() const { return st_->key; }
uint64_t DirectGet::start() const { return st_->start; }
uint64_t DirectGet::end() const { return st_->start + st_->sink.size; }

}  // namespace s3torch
