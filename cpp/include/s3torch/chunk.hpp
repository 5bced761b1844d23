#pragma once
// A run of bytes of an object that lives in a part buffer. The Chunk keeps the part's ticket (and so the
// pinned buffer) alive; copying a Chunk copies a reference, never the bytes.
#include <cstddef>
#include <cstdint>
#include <memory>

struct aws_s3_buffer_ticket;

namespace s3torch {

// Owns one reference to a pool ticket, or (rarely: bodies the CRT delivers without a ticket) a heap copy.
class BufferHold {
 public:
  explicit BufferHold(aws_s3_buffer_ticket *ticket);  // takes over one reference
  BufferHold(const uint8_t *data, size_t size);       // copies
  ~BufferHold();
  BufferHold(const BufferHold &) = delete;
  BufferHold &operator=(const BufferHold &) = delete;
  const uint8_t *owned_data() const { return owned_.get(); }

 private:
  aws_s3_buffer_ticket *ticket_ = nullptr;
  std::unique_ptr<uint8_t[]> owned_;
  int pid_;
};

struct Chunk {
  std::shared_ptr<const BufferHold> hold;
  const uint8_t *data = nullptr;
  size_t size = 0;
  uint64_t offset = 0;  // object offset of data[0]
  // steady_clock time (ns) the part was queued for the consumer: what hand-off latency is measured from.
  int64_t queued_ns = 0;

  // The same buffer without its first `n` bytes.
  Chunk tail(size_t n) const { return Chunk{hold, data + n, size - n, offset + n, queued_ns}; }
};

}  // namespace s3torch
