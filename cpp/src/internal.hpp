#pragma once
// Shared between the client and its streams; not part of the public headers.
#include <aws/common/byte_buf.h>
#include <aws/common/uri.h>
#include <aws/http/request_response.h>
#include <aws/s3/s3_client.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "s3torch/client.hpp"
#include "s3torch/direct_get.hpp"
#include "s3torch/error.hpp"
#include "s3torch/get_stream.hpp"
#include "s3torch/put_stream.hpp"
#include "s3torch/runtime.hpp"

namespace s3torch {

inline aws_byte_cursor cur(const std::string &s) { return aws_byte_cursor_from_array(s.data(), s.size()); }

inline std::string to_string(aws_byte_cursor c) { return std::string(reinterpret_cast<const char *>(c.ptr), c.len); }

inline void add_header(aws_http_message *m, const std::string &name, const std::string &value) {
  aws_http_header h = {cur(name), cur(value), AWS_HTTP_HEADER_COMPRESSION_USE_CACHE};
  aws_http_message_add_header(m, h);
}

// Where a request goes: the meta request's endpoint URI plus the HTTP path and Host header.
struct Target {
  std::string endpoint_uri;  // scheme://authority
  std::string host;          // Host header value
  std::string path;          // /bucket/key or /key, URI-encoded, query appended by the caller
};

struct Client::Impl : std::enable_shared_from_this<Client::Impl> {
  explicit Impl(ClientConfig cfg);
  ~Impl();

  Target target(const std::string &bucket, const std::string &key) const;
  // A request message with Host and User-Agent set. Caller releases.
  aws_http_message *new_message(const char *method, const Target &t) const;

  ClientConfig config;
  std::shared_ptr<Runtime> runtime;
  aws_credentials_provider *credentials = nullptr;
  aws_signing_config_aws signing{};
  aws_s3_client *client = nullptr;
  std::shared_ptr<BufferPool> pool;
  std::shared_ptr<Counters> counters = std::make_shared<Counters>();
  std::string scheme, host;
  uint32_t port = 0;
  bool path_style_default = false;
  uint64_t read_window = 0;  // bytes a GET stream may run ahead of its consumer
  std::string user_agent;
  pid_t pid;
};

// The part of a meta request that the CRT callbacks see. Kept alive by a self-reference until the
// CRT's shutdown callback, so callbacks never touch freed memory whatever the consumer does.
struct RequestBase {
  virtual ~RequestBase();
  std::shared_ptr<Client::Impl> owner;
  std::shared_ptr<RequestBase> self;  // released in the shutdown callback
  aws_s3_meta_request *meta = nullptr;
  aws_uri endpoint{};
  bool endpoint_set = false;
  std::string operation, bucket, key;
  std::string range;  // GETs: the Range header sent, for messages

  // mu guards what the CRT's threads and the caller's share: the fields from here to pool_registered.
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  bool shut_down = false;
  int crt_error = 0;
  int status = 0;
  std::string error_body;
  std::string request_id;
  // HTTP status and request id of the latest failed attempt (telemetry): the CRT's final result
  // carries neither when it gives up on a retryable status such as 500 or 503.
  int last_failed_status = 0;
  std::string last_failed_request_id;

  // GETs: the version this request must read (If-Match sent when one was pinned at its start).
  std::shared_ptr<EtagPin> pin;
  std::string if_match;       // the If-Match value sent, if any
  bool version_changed = false;  // the response's ETag differs from the pinned one

  // Registered with the pool's receivers (direct GETs, scattered streams) until the finish.
  const aws_s3_meta_request *pool_registered = nullptr;

  // Fills the callbacks, user_data, endpoint and signing of `options`, makes the meta request.
  // `keep` (a shared_ptr to this) is held until the CRT's shutdown callback.
  void launch(aws_s3_meta_request_options &options, aws_http_message *message, std::shared_ptr<RequestBase> keep);
  // launch() with `receiver` registered with the pool before the first part's buffer is reserved.
  void launch_receiving(aws_s3_meta_request_options &options, aws_http_message *message,
                        std::shared_ptr<RequestBase> keep, PoolReceiver receiver);
  // No reservation comes after the finish: the pool may forget the receiver (idempotent).
  void unregister();
  void wait_finished();
  S3Error error() const;  // build from the recorded result; call with finished == true

  virtual void on_headers(const aws_http_headers *, int) {}
  virtual int on_body(const aws_byte_cursor *, uint64_t, aws_s3_buffer_ticket *) { return AWS_OP_SUCCESS; }
  virtual void on_finished() {}
};

// In a forked child a request made in the parent can never progress (the CRT threads that own it
// exist only in the parent): every blocking call on it raises this at once instead of waiting forever.
void check_same_process(const RequestBase &r);

// A simple request whose response body is collected in memory (head, list, delete, copy).
struct SimpleRequest : RequestBase {
  std::string body;
  std::string response_headers_etag, last_modified, storage_class, restore, content_length;
  int response_status = 0;
  void on_headers(const aws_http_headers *headers, int status) override;
  int on_body(const aws_byte_cursor *body, uint64_t, aws_s3_buffer_ticket *) override;
};

struct GetStream::State : RequestBase {
  std::deque<Chunk> queue;
  std::optional<uint64_t> start, end;
  uint64_t position = 0;  // next object offset for the consumer
  std::optional<uint64_t> object_size;
  bool closed = false;
  std::shared_ptr<ScatterMap> scatter;  // set before launch, never changed
  void on_headers(const aws_http_headers *headers, int status) override;
  int on_body(const aws_byte_cursor *body, uint64_t range_start, aws_s3_buffer_ticket *ticket) override;
  void on_finished() override;
  // Called with the lock held once the request finished with an error; may clear it (see .cpp).
  void settle_error(std::unique_lock<std::mutex> &lock);
  bool settled = false;
  // The consumer took n more bytes of the front chunk (`whole`: it is done with that chunk). The
  // read window opens by what was taken once per chunk, not per read call (call without the lock).
  void consumed(uint64_t n, bool whole);
  uint64_t unreported = 0;  // bytes taken from the current chunk, not yet added to the window
};

struct DirectGet::State : RequestBase {
  DirectSink sink;     // the caller's memory: object bytes [start, start + sink.size)
  uint64_t start = 0;
  uint64_t landed = 0;                          // body bytes that arrived in place
  bool misplaced = false;                       // a part arrived elsewhere: redo as a stream
  bool cancelled = false;
  bool ok = false;                              // every byte is in the memory
  GetStream *fallback = nullptr;                // the re-download writing into the memory, while it runs
  int on_body(const aws_byte_cursor *body, uint64_t range_start, aws_s3_buffer_ticket *ticket) override;
};

struct PutStream::State : RequestBase {
  uint64_t written = 0;
  // CRC32C of every byte written, in order: sent as the object's full-object checksum when a multipart
  // upload completes. Combined from the CRC32C the CRT computed for each part's trailer (its review
  // of the parts, just before it asks for this on the same event-loop thread), so that no pass of our
  // own over the bytes is needed. Under mu.
  std::optional<uint32_t> crc32c;
  bool closed = false;
  bool aborted = false;
  std::shared_ptr<UploadLoan> lent = std::make_shared<UploadLoan>();  // every part lent (write_lent)
};

// A request's state with its identity filled in (the owner keeps the client alive for callbacks).
template <class State>
std::shared_ptr<State> new_request(const std::shared_ptr<Client::Impl> &impl, const char *operation,
                                   const std::string &bucket, const std::string &key) {
  auto st = std::make_shared<State>();
  st->owner = impl;
  st->operation = operation;
  st->bucket = bucket;
  st->key = key;
  return st;
}

// In a forked child the CRT threads that own a request do not exist: its state is leaked, never
// touched. Returns whether it was (the caller's destructor then does nothing more).
template <class State>
bool leak_if_forked(std::shared_ptr<State> &st) {
  if (!forked_since(st->owner->pid)) return false;
  new std::shared_ptr<State>(std::move(st));
  return true;
}

std::shared_ptr<SimpleRequest> run_simple(const std::shared_ptr<Client::Impl> &impl, const char *operation,
                                          const char *method, const std::string &bucket,
                                          const std::string &key, const std::string &query,
                                          const std::vector<std::pair<std::string, std::string>> &headers);

std::string header_value(const aws_http_headers *headers, const char *name);

// The body callback of every meta request (on a CRT event-loop thread): hands the body to the
// request state's on_body; noexcept.
int on_body_callback(aws_s3_meta_request *, const aws_byte_cursor *body,
                     const aws_s3_meta_request_receive_body_extra_info info, void *user_data) noexcept;

// Client::get for code that holds the client's Impl (DirectGet's fallback).
std::unique_ptr<GetStream> start_get(const std::shared_ptr<Client::Impl> &impl, const std::string &bucket,
                                     const std::string &key, std::optional<uint64_t> start,
                                     std::optional<uint64_t> end, std::shared_ptr<ScatterMap> scatter = nullptr,
                                     std::shared_ptr<EtagPin> pin = nullptr);

// A retry strategy that allows exactly one attempt per request (max_attempts=1); see retry.cpp.
aws_retry_strategy *new_single_attempt_strategy(aws_allocator *allocator, aws_event_loop_group *elg);

}  // namespace s3torch
