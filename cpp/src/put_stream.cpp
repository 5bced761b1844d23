#include "s3torch/put_stream.hpp"

#include <aws/io/future.h>
#include <aws/s3/s3_buffer_pool.h>

#include <algorithm>
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

void PutStream::check_writable() const {
  check_same_process(*st_);
  if (st_->closed || st_->aborted) {
    throw UsageError("write to a closed writer (s3://" + st_->bucket + "/" + st_->key + ")");
  }
}

// Hands n bytes to the CRT and waits until it took them; a failure aborts the upload and throws.
void PutStream::hand_over(const uint8_t *data, size_t n) {
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

void PutStream::write(const uint8_t *data, size_t n) {
  check_writable();
  if (n == 0) return;
  hand_over(data, n);
}

std::shared_ptr<UploadLoan> PutStream::new_loan() const { return std::make_shared<UploadLoan>(st_->lent); }

void PutStream::write_lent(const uint8_t *data, size_t n, const std::shared_ptr<UploadLoan> &loan) {
  check_writable();
  if (n == 0) return;
#ifdef AWS_S3_S3TORCH_IN_PLACE_PARTS
#ifdef AWS_S3_S3TORCH_LENT_RANGES
  constexpr bool kLendPieces = true;
#else
  constexpr bool kLendPieces = false;  // a CRT with patch 0007 only: whole parts are lent, the rest copied
#endif
  // Every part is exactly part_size bytes (the last aside): the part being filled holds written %
  // part of them. Bytes up to its end go into it, and the bytes after the last whole part into the
  // next one, taken lent by their tickets (sent from here, our patch 0008); each whole part between
  // is lent as the part's buffer itself (patch 0007).
  std::shared_ptr<BufferPool> pool = st_->owner->pool;
  const uint64_t part = part_size();
  const uint64_t head = std::min<uint64_t>(n, (part - st_->written % part) % part);
  const uint64_t whole = (n - head) / part * part;
  if (pool && (whole || kLendPieces)) {
    DirectSink sink;
    sink.base = const_cast<uint8_t *>(data) + head;  // never written: lent buffers come full
    sink.size = whole;
    sink.loan = loan;
    LentRange range{data, data + n, loan, 0};
    // No more parts lent at once than the pool would hold copied: the caller's memory (a save's CPU
    // copies of GPU tensors) is then held no longer than copies of it would have been.
    const uint64_t window = std::max<uint64_t>(2, pool->limit_bytes() / part);
    // Only this write's reservations and writes (all made before it returns) may see the sink and range.
    struct Registration {
      BufferPool &pool;
      const aws_s3_meta_request *meta;
      ~Registration() { pool.remove_receiver(meta); }
    } registration{*pool, st_->meta};
    pool->add_receiver(st_->meta, PoolReceiver{whole ? &sink : nullptr, nullptr, kLendPieces ? &range : nullptr});
    if (head) hand_over(data, head);
    for (uint64_t at = head; at < head + whole; at += part) {
      while (!st_->lent->wait_below(window, 1.0)) {
        std::lock_guard<std::mutex> lock(st_->mu);
        if (st_->finished) break;  // the upload failed: the next hand-over says so
      }
      hand_over(data + at, part);
    }
    if (n > head + whole) hand_over(data + head + whole, n - head - whole);
    auto lock = pool->lock_receivers();  // range.taken is written under it
    st_->owner->counters->bytes_uploaded_in_place += sink.assigned + range.taken;
    return;
  }
#endif
  hand_over(data, n);
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
// As the CRT sizes an upload's parts when it does not know the length: the client's, at least 5 MiB.
uint64_t PutStream::part_size() const { return std::max<uint64_t>(st_->owner->config.part_size, 5ull << 20); }
bool PutStream::closed() const { return st_->closed || st_->aborted; }
const std::string &PutStream::bucket() const { return st_->bucket; }
const std::string &PutStream::key() const { return st_->key; }

}  // namespace s3torch
