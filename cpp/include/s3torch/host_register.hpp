#pragma once
// Page-locking ("pinning") of the pool's slabs with a GPU runtime, so that host-to-device copies from
// part buffers go by DMA straight from them. The CUDA runtime is loaded at run time (dlopen): nothing
// links against CUDA, and a machine without it never loads it.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace s3torch {

class HostRegistrar {
 public:
  virtual ~HostRegistrar() = default;
  // Registers [p, p + n); false leaves the memory pageable (copies from it still work, staged).
  virtual bool register_memory(void *p, size_t n) noexcept = 0;
  virtual void unregister_memory(void *p) noexcept = 0;
};

// cudaHostRegister/cudaHostUnregister of the CUDA runtime library `library` (a path, or the soname of
// one already loaded: torch's), registering for device `device` (made current on the registering
// thread, so that no context is created on another device) as portable memory. Throws UsageError when
// the library cannot be loaded or lacks the functions.
std::shared_ptr<HostRegistrar> cuda_host_registrar(const std::string &library, int device);

// Tests: registers nothing, records what is registered now (a fake device).
class RecordingRegistrar : public HostRegistrar {
 public:
  bool register_memory(void *p, size_t n) noexcept override;
  void unregister_memory(void *p) noexcept override;
  uint64_t live_bytes() const;
  uint64_t registrations() const { return registrations_; }
  uint64_t unregistrations() const { return unregistrations_; }
  uint64_t bad_unregistrations() const { return bad_unregistrations_; }  // of memory never registered

 private:
  mutable std::mutex mu_;
  std::unordered_map<void *, size_t> live_;
  std::atomic<uint64_t> registrations_{0}, unregistrations_{0}, bad_unregistrations_{0};
};

}  // namespace s3torch
