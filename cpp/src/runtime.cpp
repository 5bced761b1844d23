#include "s3torch/runtime.hpp"

#include "s3torch/error.hpp"

#include <aws/common/common.h>
#include <aws/io/channel.h>
#include <aws/io/channel_bootstrap.h>
#include <aws/io/event_loop.h>
#include <aws/io/host_resolver.h>
#include <aws/io/tls_channel_handler.h>
#include <aws/s3/s3.h>
#include <unistd.h>

#include <mutex>
#include <stdexcept>
#include <string>

namespace s3torch {

namespace {
std::mutex g_mutex;
// Intentionally leaked: tearing the CRT down at interpreter exit races its own threads, and in a
// forked child the parent's runtime must never be released.
std::shared_ptr<Runtime> *g_runtime = nullptr;
bool g_library_initialized = false;
constexpr size_t kChannelMessageBytes = 256 * 1024;
}  // namespace

bool forked_since(pid_t owner_pid) { return owner_pid != getpid(); }

std::shared_ptr<Runtime> Runtime::get() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_runtime && !forked_since((*g_runtime)->pid())) return *g_runtime;
  // First use, or first use in a forked child: the old runtime (if any) is leaked on purpose.
  g_runtime = new std::shared_ptr<Runtime>(new Runtime());
  return *g_runtime;
}

Runtime::Runtime() : pid_(getpid()) {
  allocator_ = aws_default_allocator();
  if (!g_library_initialized) {
    aws_s3_library_init(allocator_);
    g_library_initialized = true;
    // The CRT reads sockets (and sizes its channel messages) in 16 KiB steps, a TLS record's size,
    // re-arming its event loop after each: a read syscall, an HTTP decode pass and a body callback
    // per step. With 256 KiB steps a concurrent DCP load (8 streams) used 4-7% less client CPU in
    // three A/Bs; one stream reading 1 GiB showed no difference. Set once, before the first channel
    // exists; TLS still frames records itself.
    g_aws_channel_max_fragment_size = kChannelMessageBytes;
  }
  aws_event_loop_group_options elg_options{};
  elg_options.loop_count = 0;  // one loop per core
  elg_ = aws_event_loop_group_new(allocator_, &elg_options);
  if (!elg_) throw std::runtime_error("s3torch: cannot create the CRT event loop group");

  aws_host_resolver_default_options resolver_options{};
  resolver_options.el_group = elg_;
  resolver_options.max_entries = 64;
  resolver_ = aws_host_resolver_new_default(allocator_, &resolver_options);
  if (!resolver_) throw std::runtime_error("s3torch: cannot create the CRT host resolver");

  aws_client_bootstrap_options bootstrap_options{};
  bootstrap_options.event_loop_group = elg_;
  bootstrap_options.host_resolver = resolver_;
  bootstrap_ = aws_client_bootstrap_new(allocator_, &bootstrap_options);
  if (!bootstrap_) throw std::runtime_error("s3torch: cannot create the CRT client bootstrap");

}

aws_tls_ctx *Runtime::tls_ctx(const std::string &ca_file) {
  // Created on first use: loading a CA store costs tens of milliseconds, and plain-HTTP endpoints
  // (local servers, proxies) never need it.
  std::lock_guard<std::mutex> lock(tls_mutex_);
  auto found = tls_ctxs_.find(ca_file);
  if (found != tls_ctxs_.end()) return found->second;
  aws_tls_ctx_options tls_options;
  aws_tls_ctx_options_init_default_client(&tls_options, allocator_);
  if (!ca_file.empty() &&
      aws_tls_ctx_options_override_default_trust_store_from_path(&tls_options, nullptr, ca_file.c_str()) !=
          AWS_OP_SUCCESS) {
    int err = aws_last_error();
    aws_tls_ctx_options_clean_up(&tls_options);
    throw UsageError("cannot load the CA bundle '" + ca_file + "' (AWS_CA_BUNDLE): " + aws_error_debug_str(err));
  }
  aws_tls_ctx *ctx = aws_tls_client_ctx_new(allocator_, &tls_options);
  aws_tls_ctx_options_clean_up(&tls_options);
  if (!ctx) {
    throw std::runtime_error(std::string("s3torch: cannot create the TLS context: ") +
                             aws_error_debug_str(aws_last_error()));
  }
  tls_ctxs_.emplace(ca_file, ctx);
  return ctx;
}

Runtime::~Runtime() {
  if (forked_since(pid_)) return;
  for (auto &entry : tls_ctxs_) aws_tls_ctx_release(entry.second);
  aws_client_bootstrap_release(bootstrap_);
  aws_host_resolver_release(resolver_);
  aws_event_loop_group_release(elg_);
}

}  // namespace s3torch
