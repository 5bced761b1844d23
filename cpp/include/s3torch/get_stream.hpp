#pragma once
// A GET of a whole object or a byte range. Parts arrive (in object order) into pool buffers; the
// stream queues them as Chunks without copying. Consumers pull chunks, or copy across chunks into a
// buffer of their own with read_into. Destroying the stream cancels the request.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "s3torch/chunk.hpp"

namespace s3torch {

class GetStream {
 public:
  struct State;
  explicit GetStream(std::shared_ptr<State> state);
  ~GetStream();
  GetStream(const GetStream &) = delete;
  GetStream &operator=(const GetStream &) = delete;

  // Next chunk in object order, at most `max` bytes of it (the rest stays queued); nullopt at the end.
  // Blocks. Throws S3Error if the request failed.
  std::optional<Chunk> next(size_t max = SIZE_MAX);
  // Copies the next bytes of the stream into dst (across chunks); returns how many were written,
  // fewer than n only at the end of the stream. Blocks. Throws S3Error.
  size_t read_into(uint8_t *dst, size_t n);
  // Discards the next n bytes (fewer only at the end of the stream); returns how many. Blocks.
  size_t skip(size_t n);
  // Copies up to n of the next bytes into dst without consuming them; fewer only at the end of
  // the stream. Blocks until that many are queued. Throws S3Error if the request failed first.
  size_t peek(uint8_t *dst, size_t n);
  // Bytes left between the consumer's position and the end of the range (or object). Blocks until
  // the response headers arrived. Throws S3Error if the request failed before that.
  uint64_t remaining();
  // Cancels the request and drops queued chunks. Idempotent.
  void close();

  uint64_t tell() const;   // object offset of the next byte the consumer gets
  const std::string &bucket() const;
  const std::string &key() const;
  std::optional<uint64_t> start() const;
  std::optional<uint64_t> end() const;
  // Total object size as reported by the response headers; nullopt until they arrived.
  std::optional<uint64_t> object_size() const;
  bool closed() const;
  // Keeps `keep` alive as long as the stream (e.g. the memory a ScatterMap writes into).
  void hold(std::shared_ptr<void> keep) { keep_ = std::move(keep); }

 private:
  size_t consume(uint8_t *dst, size_t n);  // read_into, or skip when dst is null
  std::shared_ptr<State> st_;
  std::shared_ptr<void> keep_;  // destroyed after ~GetStream's close(): nothing writes to it any more
};

}  // namespace s3torch
