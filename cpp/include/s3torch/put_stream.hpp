#pragma once
// A streaming upload: write() hands data to the CRT, which fills part buffers and uploads full parts
// in parallel (multipart upload); close() completes it. abort(), an error, or destroying the stream
// without close() aborts the upload, so no partial object ever becomes visible.
#include <cstdint>
#include <memory>
#include <string>

namespace s3torch {

class PutStream {
 public:
  struct State;
  explicit PutStream(std::shared_ptr<State> state);
  ~PutStream();
  PutStream(const PutStream &) = delete;
  PutStream &operator=(const PutStream &) = delete;

  void write(const uint8_t *data, size_t n);  // blocks until the CRT took the data; throws S3Error
  void close();                               // completes the upload; throws S3Error
  void abort();                               // idempotent; no object appears
  uint64_t bytes_written() const;
  bool closed() const;
  const std::string &bucket() const;
  const std::string &key() const;

 private:
  std::shared_ptr<State> st_;
};

}  // namespace s3torch
