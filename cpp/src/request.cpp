#include <aws/common/string.h>
#include <aws/http/request_response.h>
#include <aws/s3/s3_client.h>
#include <unistd.h>

#include "internal.hpp"
#include "s3torch/crt_log.hpp"

// The request state the CRT's callbacks see (RequestBase, SimpleRequest) and the callbacks themselves.
// Threads: launch(), wait_finished() and error() run on the caller's thread; every s_on_* callback on
// one of the CRT's event-loop threads (on_body_callback too). RequestBase::mu guards finished, shut_down, crt_error, status,
// error_body, request_id, last_failed_*, version_changed, meta and self (see internal.hpp).

namespace s3torch {

namespace {

// CRT callbacks (on the CRT's event-loop threads): noexcept, and no exception may leave them; a
// failure is recorded for the waiting call or fails the request.
int s_on_headers(aws_s3_meta_request *, const aws_http_headers *headers, int status, void *user_data) noexcept {
  auto *r = static_cast<RequestBase *>(user_data);
  try {
    if (r->pin && status >= 200 && status < 300 && !r->pin->check(header_value(headers, "ETag"))) {
      // Another GET of this reader or load pinned a different version: these bytes must not mix.
      std::lock_guard<std::mutex> lock(r->mu);
      r->version_changed = true;
      return aws_raise_error(AWS_ERROR_S3_CANCELED);
    }
    r->on_headers(headers, status);
  } catch (...) {
    return aws_raise_error(AWS_ERROR_S3_CANCELED);
  }
  return AWS_OP_SUCCESS;
}

void s_on_finish(aws_s3_meta_request *, const aws_s3_meta_request_result *result, void *user_data) noexcept {
  auto *r = static_cast<RequestBase *>(user_data);
  std::string body;
  std::string request_id;
  try {
    if (result->error_response_body) {
      body.assign(reinterpret_cast<const char *>(result->error_response_body->buffer),
                  result->error_response_body->len);
    }
    if (result->error_response_headers) {
      request_id = header_value(result->error_response_headers, "x-amz-request-id");
    }
  } catch (...) {  // out of memory for the error text: the error code still reaches the caller
  }
  {
    std::lock_guard<std::mutex> lock(r->mu);
    r->crt_error = result->error_code;
    r->status = result->response_status;
    r->error_body.swap(body);
    r->request_id.swap(request_id);
    r->finished = true;
  }
  if (result->error_code == AWS_ERROR_S3_RESPONSE_CHECKSUM_MISMATCH) {
    r->owner->counters->checksum_mismatches++;
  } else if (result->error_code == AWS_ERROR_SUCCESS && result->did_validate) {
    r->owner->counters->validated_gets++;
  }
  r->unregister();
  try {
    r->on_finished();
  } catch (...) {
  }
  r->cv.notify_all();
}

void s_on_shutdown(void *user_data) noexcept {
  auto *r = static_cast<RequestBase *>(user_data);
  std::shared_ptr<RequestBase> self;
  {
    std::lock_guard<std::mutex> lock(r->mu);
    r->shut_down = true;
    self.swap(r->self);  // may be the last reference: release outside the lock
  }
  r->cv.notify_all();
}

void s_on_telemetry(aws_s3_meta_request *, aws_s3_request_metrics *metrics, void *user_data) noexcept {
  auto *r = static_cast<RequestBase *>(user_data);
  r->owner->counters->http_requests++;
  int attempt_error = aws_s3_request_metrics_get_error_code(metrics);
  if (attempt_error != AWS_ERROR_SUCCESS) {
    r->owner->counters->failed_attempts++;
    int status = 0;
    const aws_string *rid = nullptr;
    bool has_status = aws_s3_request_metrics_get_response_status_code(metrics, &status) == AWS_OP_SUCCESS;
    bool has_rid = aws_s3_request_metrics_get_request_id(metrics, &rid) == AWS_OP_SUCCESS && rid;
    log_lazy(AWS_LL_DEBUG, [&] {
      return "attempt failed (the CRT retries while attempts are left): " + r->operation + " s3://" + r->bucket +
             "/" + r->key + (r->range.empty() ? "" : " " + r->range) + ": HTTP " +
             std::to_string(has_status ? status : 0) + ", " + aws_error_name(attempt_error);
    });
    std::lock_guard<std::mutex> lock(r->mu);
    if (has_status) r->last_failed_status = status;
    try {
      if (has_rid) r->last_failed_request_id = aws_string_c_str(rid);
    } catch (...) {  // only the request id of an error message is lost
    }
  }
}

}  // namespace

int on_body_callback(aws_s3_meta_request *, const aws_byte_cursor *body,
                 const aws_s3_meta_request_receive_body_extra_info info, void *user_data) noexcept {
  auto *r = static_cast<RequestBase *>(user_data);
  try {
    return r->on_body(body, info.range_start, info.ticket);
  } catch (...) {
    return aws_raise_error(AWS_ERROR_S3_CANCELED);
  }
}

std::string header_value(const aws_http_headers *headers, const char *name) {
  aws_byte_cursor value;
  if (aws_http_headers_get(headers, aws_byte_cursor_from_c_str(name), &value) == AWS_OP_SUCCESS) {
    return to_string(value);
  }
  return std::string();
}

// ---------------------------------------------------------------------------------------------
// RequestBase

void check_same_process(const RequestBase &r) {
  if (!r.owner || !forked_since(r.owner->pid)) return;
  throw S3Error(r.operation + " s3://" + r.bucket + "/" + r.key + ": this request was started in process " +
                    std::to_string(r.owner->pid) + " and cannot be used in the forked child " +
                    std::to_string(getpid()) + "; open a new one in the child",
                r.operation, r.bucket, r.key, 0, "UsedAfterFork", "", 0);
}

RequestBase::~RequestBase() {
  if (!owner || forked_since(owner->pid)) return;
  if (endpoint_set) aws_uri_clean_up(&endpoint);
  if (pool_registered) unregister();  // the last reference: nothing else can change it now
}

void RequestBase::launch_receiving(aws_s3_meta_request_options &options, aws_http_message *message,
                                   std::shared_ptr<RequestBase> keep, PoolReceiver receiver) {
  // Reservations wait for this lock, so none can come before the registration.
  auto receivers = owner->pool->lock_receivers();
  launch(options, message, std::move(keep));
  std::lock_guard<std::mutex> lock(mu);
  if (!finished) {
    owner->pool->add_receiver(meta, std::move(receiver));
    pool_registered = meta;
  }
}

void RequestBase::unregister() {
  if (!owner->pool) return;
  auto receivers = owner->pool->lock_receivers();
  if (pool_registered) owner->pool->remove_receiver(pool_registered);
  pool_registered = nullptr;
}

void RequestBase::launch(aws_s3_meta_request_options &options, aws_http_message *message,
                        std::shared_ptr<RequestBase> keep) {
  // The meta request takes its own reference to the message; ours goes on every path out of here.
  std::unique_ptr<aws_http_message, decltype(&aws_http_message_release)> owned(message, aws_http_message_release);
  Target t = owner->target(bucket, key);
  aws_byte_cursor uri_cur = cur(t.endpoint_uri);
  if (aws_uri_init_parse(&endpoint, owner->runtime->allocator(), &uri_cur) != AWS_OP_SUCCESS) {
    throw make_error(operation, bucket, key, aws_last_error(), 0, "", "");
  }
  endpoint_set = true;
  options.message = message;
  options.endpoint = &endpoint;
  options.user_data = this;
  options.headers_callback = s_on_headers;
  options.finish_callback = s_on_finish;
  options.shutdown_callback = s_on_shutdown;
  options.telemetry_callback = s_on_telemetry;
  {
    // The CRT may call back (even shut down) before make_meta_request returns.
    std::lock_guard<std::mutex> lock(mu);
    self = std::move(keep);
  }
  owner->counters->meta_requests++;
  aws_s3_meta_request *made = aws_s3_client_make_meta_request(owner->client, &options);
  if (!made) {
    int err = aws_last_error();
    std::shared_ptr<RequestBase> drop;
    {
      std::lock_guard<std::mutex> lock(mu);
      drop.swap(self);
    }
    throw make_error(operation, bucket, key, err, 0, "", "");
  }
  std::lock_guard<std::mutex> lock(mu);
  meta = made;
}

void RequestBase::wait_finished() {
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return finished; });
}

S3Error RequestBase::error() const {
  int code_status = status ? status : last_failed_status;
  if (version_changed || (code_status == 412 && !if_match.empty())) {
    std::string pinned = pin ? pin->get() : if_match;
    return S3Error(operation + " s3://" + bucket + "/" + key + " failed: the object changed during the read (" +
                       "this reader or load pinned ETag " + pinned + "); reopen it to read the new version",
                   operation, bucket, key, 412, "PreconditionFailed", request_id, crt_error);
  }
  return make_error(operation, bucket, key, crt_error, status ? status : last_failed_status, error_body,
                    request_id.empty() ? last_failed_request_id : request_id);
}

// ---------------------------------------------------------------------------------------------
// SimpleRequest

void SimpleRequest::on_headers(const aws_http_headers *headers, int status_code) {
  response_status = status_code;
  response_headers_etag = header_value(headers, "ETag");
  last_modified = header_value(headers, "Last-Modified");
  storage_class = header_value(headers, "x-amz-storage-class");
  restore = header_value(headers, "x-amz-restore");
  content_length = header_value(headers, "Content-Length");
  std::string rid = header_value(headers, "x-amz-request-id");
  if (!rid.empty()) {
    std::lock_guard<std::mutex> lock(mu);
    request_id = rid;
  }
}

int SimpleRequest::on_body(const aws_byte_cursor *b, uint64_t, aws_s3_buffer_ticket *) {
  body.append(reinterpret_cast<const char *>(b->ptr), b->len);
  return AWS_OP_SUCCESS;
}

// Runs a DEFAULT meta request to completion and returns it (throws S3Error on failure).
std::shared_ptr<SimpleRequest> run_simple(const std::shared_ptr<Client::Impl> &impl, const char *operation,
                                          const char *method, const std::string &bucket,
                                          const std::string &key, const std::string &query,
                                          const std::vector<std::pair<std::string, std::string>> &headers) {
  auto req = new_request<SimpleRequest>(impl, operation, bucket, key);
  Target t = impl->target(bucket, key);
  if (!query.empty()) t.path += "?" + query;
  aws_http_message *m = impl->new_message(method, t);
  for (auto &h : headers) add_header(m, h.first, h.second);
  aws_s3_meta_request_options o{};
  o.type = AWS_S3_META_REQUEST_TYPE_DEFAULT;
  o.operation_name = aws_byte_cursor_from_c_str(operation);
  o.body_callback_ex = on_body_callback;
  req->launch(o, m, req);
  req->wait_finished();
  aws_s3_meta_request_release(req->meta);
  if (req->crt_error != AWS_ERROR_SUCCESS) throw req->error();
  return req;
}

}  // namespace s3torch
