#include "s3torch/direct_get.hpp"

#include <aws/s3/s3_client.h>

#include "internal.hpp"

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// DirectGet

DirectGet::DirectGet(std::shared_ptr<State> state) : st_(std::move(state)) {}

DirectGet::~DirectGet() {
  if (leak_if_forked(st_)) return;
  cancel();
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
  aws_s3_meta_request *running = nullptr;
  {
    std::lock_guard<std::mutex> lock(st_->mu);
    if (!st_->finished && !st_->ok) {
      st_->cancelled = true;
      running = st_->meta;
    }
  }
  if (running) aws_s3_meta_request_cancel(running);
  settle();
}

void DirectGet::wait() {
  settle();
  std::unique_lock<std::mutex> lock(st_->mu);
  if (st_->ok) return;
  if (st_->misplaced && !st_->cancelled) {
    // Redo the range as an ordinary stream, copied in: the in-place parts may sit at wrong offsets.
    lock.unlock();
    auto stream = start_get(st_->owner, st_->bucket, st_->key, st_->start, end());
    size_t got = stream->read_into(st_->sink.base, st_->sink.size);
    st_->owner->counters->direct_fallbacks++;
    lock.lock();
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
