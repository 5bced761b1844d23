#pragma once
// Process-wide CRT state: allocator, event loop group, resolver, bootstrap, TLS contexts.
// Created lazily; a forked child gets a fresh one (the parent's threads do not exist there).
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <sys/types.h>

struct aws_allocator;
struct aws_event_loop_group;
struct aws_host_resolver;
struct aws_client_bootstrap;
struct aws_tls_ctx;

namespace s3torch {

class Runtime {
 public:
  // The runtime of the current process (re-created after fork). Thread-safe.
  static std::shared_ptr<Runtime> get();

  aws_allocator *allocator() const { return allocator_; }
  aws_client_bootstrap *bootstrap() const { return bootstrap_; }
  aws_event_loop_group *event_loop_group() const { return elg_; }
  // Client TLS context trusting the system CA store, or only the PEM bundle at `ca_file` when it is
  // not empty. Created on first use per bundle. Throws UsageError if the bundle cannot be loaded.
  aws_tls_ctx *tls_ctx(const std::string &ca_file = std::string());
  pid_t pid() const { return pid_; }

  Runtime(const Runtime &) = delete;
  Runtime &operator=(const Runtime &) = delete;
  ~Runtime();

 private:
  Runtime();
  aws_allocator *allocator_ = nullptr;
  aws_event_loop_group *elg_ = nullptr;
  aws_host_resolver *resolver_ = nullptr;
  aws_client_bootstrap *bootstrap_ = nullptr;
  std::mutex tls_mutex_;
  std::map<std::string, aws_tls_ctx *> tls_ctxs_;
  pid_t pid_;
};

// True when called in a process other than the one that created `owner_pid`'s objects: such CRT
// handles must be leaked, not released (their threads live only in the parent).
bool forked_since(pid_t owner_pid);

}  // namespace s3torch
