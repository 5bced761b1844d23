#pragma once
// A streaming upload: write() hands data to the CRT, which fills part buffers and uploads full parts
// in parallel (multipart upload); close() completes it. abort(), an error, or destroying the stream
// without close() aborts the upload, so no partial object ever becomes visible.
#include <cstdint>
#include <memory>
#include <string>

#include "s3torch/buffer_pool.hpp"

namespace s3torch {

class PutStream {
 public:
  struct State;
  explicit PutStream(std::shared_ptr<State> state);
  ~PutStream();
  PutStream(const PutStream &) = delete;
  PutStream &operator=(const PutStream &) = delete;

  void write(const uint8_t *data, size_t n);  // blocks until the CRT took the data; throws S3Error
  // write() of bytes that the caller keeps valid and unchanged until `loan` (made by new_loan()) came
  // back (UploadLoan::returned; at the latest once the upload ended and the CRT let go of its parts): each
  // whole part inside them is sent from them in place instead of being copied into a part buffer
  // (counted in bytes_uploaded_in_place), with no more parts of the upload lent at once than the pool
  // holds copied ones. Needs the bundled CRT (patch 0007); otherwise a plain write(). After a failure
  // the loan may come back only once the stream is destroyed (the CRT then lets go of its last buffer).
  void write_lent(const uint8_t *data, size_t n, const std::shared_ptr<UploadLoan> &loan);
  std::shared_ptr<UploadLoan> new_loan() const;
  void close();                               // completes the upload; throws S3Error
  void abort();                               // idempotent; no object appears
  uint64_t bytes_written() const;
  uint64_t part_size() const;  // every part's size but the last's
  bool closed() const;
  const std::string &bucket() const;
  const std::string &key() const;

 private:
  void check_writable() const;
  void hand_over(const uint8_t *data, size_t n);
  std::shared_ptr<State> st_;
};

}  // namespace s3torch
