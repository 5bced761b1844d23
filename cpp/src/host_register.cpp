#include "s3torch/host_register.hpp"

#include <aws/common/logging.h>
#include <dlfcn.h>

#include "s3torch/crt_log.hpp"
#include "s3torch/error.hpp"

namespace s3torch {

namespace {

// The CUDA runtime's C signatures (cudaError_t is an int enum; 0 is cudaSuccess).
using HostRegisterFn = int (*)(void *, size_t, unsigned int);
using HostUnregisterFn = int (*)(void *);
using SetDeviceFn = int (*)(int);
using GetDeviceFn = int (*)(int *);
using GetLastErrorFn = int (*)();
constexpr unsigned int kHostRegisterPortable = 1;  // pinned for every CUDA context, not only the current one

class CudaRegistrar : public HostRegistrar {
 public:
  CudaRegistrar(void *lib, int device) : device_(device) {
    host_register_ = reinterpret_cast<HostRegisterFn>(dlsym(lib, "cudaHostRegister"));
    host_unregister_ = reinterpret_cast<HostUnregisterFn>(dlsym(lib, "cudaHostUnregister"));
    set_device_ = reinterpret_cast<SetDeviceFn>(dlsym(lib, "cudaSetDevice"));
    get_device_ = reinterpret_cast<GetDeviceFn>(dlsym(lib, "cudaGetDevice"));
    get_last_error_ = reinterpret_cast<GetLastErrorFn>(dlsym(lib, "cudaGetLastError"));
  }
  // The runtime stays loaded (no dlclose): this may be destroyed on a CRT thread at exit, while
  // torch still uses the same library.
  bool complete() const {
    return host_register_ && host_unregister_ && set_device_ && get_device_ && get_last_error_;
  }

  bool register_memory(void *p, size_t n) noexcept override {
    // The calling thread may be the user's (torch keeps its current device there): register for
    // our device, then put theirs back.
    int previous = -1;
    int rc = get_device_(&previous);
    if (rc == 0 && previous != device_) rc = set_device_(device_);
    if (rc == 0) rc = host_register_(p, n, kHostRegisterPortable);
    if (previous >= 0 && previous != device_) set_device_(previous);
    if (rc != 0) {
      get_last_error_();  // clear it: it must not surface in the user's next CUDA call
      log_lazy(AWS_LL_WARN, [&] {
        return "cudaHostRegister of a " + std::to_string(n) + "-byte slab failed (error " + std::to_string(rc) +
               "): its part buffers stay pageable";
      });
      return false;
    }
    return true;
  }

  void unregister_memory(void *p) noexcept override {
    if (host_unregister_(p) != 0) get_last_error_();
  }

 private:
  int device_;
  HostRegisterFn host_register_ = nullptr;
  HostUnregisterFn host_unregister_ = nullptr;
  SetDeviceFn set_device_ = nullptr;
  GetDeviceFn get_device_ = nullptr;
  GetLastErrorFn get_last_error_ = nullptr;
};

}  // namespace

std::shared_ptr<HostRegistrar> cuda_host_registrar(const std::string &library, int device) {
  void *lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    throw UsageError("cannot load the CUDA runtime " + library + ": " + (why ? why : "unknown error"));
  }
  auto registrar = std::make_shared<CudaRegistrar>(lib, device);
  if (!registrar->complete()) {
    dlclose(lib);
    throw UsageError(library + " has no cudaHostRegister/cudaHostUnregister/cudaSetDevice/cudaGetDevice: "
                     "not a CUDA runtime");
  }
  return registrar;
}

bool RecordingRegistrar::register_memory(void *p, size_t n) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    live_[p] = n;
  } catch (...) {
    return false;
  }
  registrations_++;
  return true;
}

void RecordingRegistrar::unregister_memory(void *p) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  if (live_.erase(p)) {
    unregistrations_++;
  } else {
    bad_unregistrations_++;
  }
}

uint64_t RecordingRegistrar::live_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t total = 0;
  for (const auto &kv : live_) total += kv.second;
  return total;
}

}  // namespace s3torch
