#pragma once
// A ranged GET whose part requests receive straight into the caller's memory: the part buffers the
// CRT appends the response bodies to are slices of that memory (see DirectSink), so the bytes are
// copied once in user space, from the socket's read buffer into their destination, and no pool
// buffer is used. Should a part ever land elsewhere than its object offset says (the pool hands out
// slices in reservation order, which the CRT keeps as part order), the GET is redone as an ordinary
// stream copied into the memory: correct either way, and counted.
#include <cstdint>
#include <memory>
#include <string>

namespace s3torch {

class DirectGet {
 public:
  struct State;
  explicit DirectGet(std::shared_ptr<State> state);
  // Cancels a GET still running and waits until it can no longer write to the memory.
  ~DirectGet();
  DirectGet(const DirectGet &) = delete;
  DirectGet &operator=(const DirectGet &) = delete;

  // Blocks until every byte of the range is in the memory. Throws S3Error if the GET failed (the
  // memory then holds an unspecified mix of old and new bytes). Idempotent.
  void wait();
  // Cancels the GET (if still running) and waits until it is over; wait() then throws. Idempotent.
  void cancel();
  bool done() const;  // finished, successfully or not; never blocks

  const std::string &bucket() const;
  const std::string &key() const;
  uint64_t start() const;
  uint64_t end() const;

 private:
  void settle();  // waits for the end of the meta request and releases it
  std::shared_ptr<State> st_;
};

}  // namespace s3torch
