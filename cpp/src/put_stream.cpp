#include "s3torch/put_stream.hpp"

#include <aws/io/future.h>

#include <cstdint>

#include "internal.hpp"

namespace s3torch {

PutStream::PutStream(std::shared_ptr<State> state) : st_(std::move(state)) {}

PutStream::~PutStream() {
  if (leak_if_forked(st_)) return;
  try {
    abort();  // dropped without close(): no object may appear
  } catch (...) {
  }
  if (st_->meta) aws_s3_meta_request_release(st_->meta);
}

namespace {

// Hands data (or EOF) to the CRT and waits until it took it. Returns the CRT error code, 0 if OK.
int write_and_wait(aws_s3_meta_request *meta, const uint8_t *data, size_t n, bool eof) {
  aws_future_void *f = aws_s3_meta_request_write(meta, aws_byte_cursor_from_array(data, n), eof);
  aws_future_void_wait(f, UINT64_MAX);
  int err = aws_future_void_get_error(f);
  aws_future_void_release(f);
  return err;
}

}  // namespace

void PutStream::write(const uint8_t *data, size_t n) {
  check_same_process(*st_);
  if (st_->closed || st_->aborted) {
    throw UsageError("write to a closed writer (s3://" + st_->bucket + "/" + st_->key + ")");
  }
  if (n == 0) return;
  int err = write_and_wait(st_->meta, data, n, false);
  if (err != 0) {
    st_->aborted = true;
    st_->wait_finished();
    if (st_->crt_error == 0) st_->crt_error = err;
    throw st_->error();
  }
  st_->written += n;
  st_->owner->counters->bytes_uploaded += n;
}

void PutStream::close() {
  check_same_process(*st_);
  if (st_->aborted) throw UsageError("close of an aborted upload (s3://" + st_->bucket + "/" + st_->key + ")");
  if (st_->closed) return;
  st_->closed = true;
  int err = write_and_wait(st_->meta, nullptr, 0, true);
  st_->wait_finished();
  if (st_->crt_error == 0 && err != 0) st_->crt_error = err;
  if (st_->crt_error != 0) throw st_->error();
}

void PutStream::abort() {
  if (st_->closed || st_->aborted) return;
  if (forked_since(st_->owner->pid)) {  // the parent's upload: only the parent may end it
    st_->aborted = true;
    return;
  }
  st_->aborted = true;
  aws_s3_meta_request_cancel(st_->meta);
  st_->wait_finished();
}

uint64_t PutStream::bytes_written() const { return st_->written; }
bool PutStream::closed() const { return st_->closed || st_->aborted; }
const std::string &PutStream::bucket() const { return st_->bucket; }
const std::string &PutStream::key() const { return st_->key; }

}  // namespace s3torch
