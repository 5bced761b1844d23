#include "s3torch/client.hpp"

#include <aws/auth/credentials.h>
#include <aws/checksums/crc.h>
#include <aws/common/date_time.h>
#include <aws/common/encoding.h>
#include <aws/common/string.h>
#include <aws/http/connection.h>
#include <aws/http/request_response.h>
#include <aws/io/retry_strategy.h>
#include <aws/io/tls_channel_handler.h>
#include <aws/io/uri.h>
#include <aws/s3/s3_client.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "internal.hpp"
#include "s3torch/crt_log.hpp"
#include "s3torch/prefault.hpp"
#include "s3torch/xml.hpp"

namespace s3torch {

// ---------------------------------------------------------------------------------------------
// helpers

namespace {

std::string encode_path(const std::string &s) {
  aws_byte_buf buf;
  aws_byte_buf_init(&buf, aws_default_allocator(), s.size() * 3 + 1);
  aws_byte_cursor c = cur(s);
  aws_byte_buf_append_encoding_uri_path(&buf, &c);
  std::string out(reinterpret_cast<const char *>(buf.buffer), buf.len);
  aws_byte_buf_clean_up(&buf);
  return out;
}

std::string encode_param(const std::string &s) {
  aws_byte_buf buf;
  aws_byte_buf_init(&buf, aws_default_allocator(), s.size() * 3 + 1);
  aws_byte_cursor c = cur(s);
  aws_byte_buf_append_encoding_uri_param(&buf, &c);
  std::string out(reinterpret_cast<const char *>(buf.buffer), buf.len);
  aws_byte_buf_clean_up(&buf);
  return out;
}

// The PEM bundle HTTPS endpoints are verified against instead of the system store, as in the AWS
// CLI and SDKs (S3-compatible stores behind a private CA); empty: the system store.
std::string env_ca_bundle() {
  const char *path = std::getenv("AWS_CA_BUNDLE");
  return path ? std::string(path) : std::string();
}

bool env_has_static_credentials() {
  const char *id = std::getenv("AWS_ACCESS_KEY_ID");
  const char *secret = std::getenv("AWS_SECRET_ACCESS_KEY");
  return id && *id && secret && *secret;
}

// A quarter of the pool (at least two parts, so the next part downloads while one is read), but never
// more than half: a stream opened and not read yet then still leaves room for another one to finish.
uint64_t stream_read_window(uint64_t limit, uint64_t part) {
  uint64_t w = std::max<uint64_t>(limit / 4, 2 * part);
  return std::max<uint64_t>(part, std::min<uint64_t>(w, limit / 2));
}

bool is_ip_or_localhost(const std::string &host) {
  unsigned char addr[16];
  if (host == "localhost") return true;
  if (inet_pton(AF_INET, host.c_str(), addr) == 1) return true;
  std::string h = host;
  if (!h.empty() && h.front() == '[') h = h.substr(1, h.size() - 2);
  return inet_pton(AF_INET6, h.c_str(), addr) == 1;
}

int64_t parse_date(const std::string &text, aws_date_format format) {
  if (text.empty()) return 0;
  aws_date_time dt;
  aws_byte_buf buf = aws_byte_buf_from_array(text.data(), text.size());
  if (aws_date_time_init_from_str(&dt, &buf, format) != AWS_OP_SUCCESS) return 0;
  return static_cast<int64_t>(aws_date_time_as_epoch_secs(&dt));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Client::Impl

Client::Impl::Impl(ClientConfig cfg) : config(std::move(cfg)), runtime(Runtime::get()), pid(getpid()) {
  aws_allocator *alloc = runtime->allocator();

  // Endpoint: default AWS, or the user's (scheme, host, port).
  if (config.endpoint.empty()) {
    scheme = "https";
    host = "s3." + config.region + ".amazonaws.com";
    port = 443;
  } else {
    aws_uri uri;
    aws_byte_cursor c = cur(config.endpoint);
    if (aws_uri_init_parse(&uri, alloc, &c) != AWS_OP_SUCCESS || aws_uri_host_name(&uri)->len == 0) {
      throw UsageError("invalid endpoint '" + config.endpoint + "': expected http(s)://host[:port]");
    }
    scheme = aws_uri_scheme(&uri)->len ? to_string(*aws_uri_scheme(&uri)) : "https";
    host = to_string(*aws_uri_host_name(&uri));
    // The parser drops an IPv6 literal's brackets; the Host header and URL need them back.
    if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
    port = aws_uri_port(&uri);
    aws_uri_clean_up(&uri);
    if (scheme != "http" && scheme != "https") {
      throw UsageError("invalid endpoint '" + config.endpoint + "': scheme must be http or https");
    }
  }
  path_style_default = config.force_path_style || is_ip_or_localhost(host);
  // The Python layer passes the whole header (s3torch/<version> ua/2.1 os/... md/pytorch#...).
  user_agent = config.user_agent_prefix.empty() ? "s3torch" : config.user_agent_prefix;

  if (config.unsigned_requests) {
    aws_credentials_provider_shutdown_options so{};
    credentials = aws_credentials_provider_new_anonymous(alloc, &so);
  } else if (env_has_static_credentials()) {
    // The default chain would pick the environment first anyway; building it costs a TLS context
    // (tens of milliseconds) that an environment-configured client never uses.
    aws_credentials_provider_environment_options o{};
    credentials = aws_credentials_provider_new_environment(alloc, &o);
  } else {
    aws_credentials_provider_chain_default_options o{};
    o.bootstrap = runtime->bootstrap();
    o.tls_ctx = runtime->tls_ctx(env_ca_bundle());
    if (!config.profile.empty()) o.profile_name_override = cur(config.profile);
    credentials = aws_credentials_provider_new_chain_default(alloc, &o);
  }
  if (!credentials) throw make_error("CreateClient", "", "", aws_last_error(), 0, "", "");
  aws_s3_init_default_signing_config(&signing, cur(config.region), credentials);

  PoolFactoryContext pool_ctx;
  pool_ctx.memory_limit = config.memory_limit_bytes;

  bool tls = scheme == "https";
  aws_tls_connection_options tls_options{};
  if (tls) aws_tls_connection_options_init_from_ctx(&tls_options, runtime->tls_ctx(env_ca_bundle()));

  aws_s3_client_config cc{};
  cc.region = cur(config.region);
  cc.client_bootstrap = runtime->bootstrap();
  cc.tls_mode = tls ? AWS_MR_TLS_ENABLED : AWS_MR_TLS_DISABLED;
  cc.tls_connection_options = tls ? &tls_options : nullptr;
  cc.signing_config = &signing;
  cc.part_size = config.part_size;
  cc.throughput_target_gbps = config.throughput_target_gbps;
  cc.memory_limit_in_bytes = config.memory_limit_bytes;
  cc.buffer_pool_factory_fn = pool_factory;
  // Read backpressure: each GET may run ahead of its consumer by a window, opened as the consumer
  // takes bytes, so a stream nobody reads cannot fill the pool and starve the ones being read.
  uint64_t limit = config.memory_limit_bytes ? config.memory_limit_bytes
                                             : aws_s3_default_memory_limit_for_throughput(config.throughput_target_gbps);
  read_window = stream_read_window(limit, config.part_size);
  cc.enable_read_backpressure = true;
  cc.initial_read_window = static_cast<size_t>(read_window);
  cc.buffer_pool_user_data = &pool_ctx;
  // A server that stops sending mid-body: the connection is dropped after read_timeout_s without a
  // byte (and the request retried while attempts are left), so a reader never waits forever.
  aws_http_connection_monitoring_options monitoring{};
  if (config.read_timeout_s) {
    monitoring.minimum_throughput_bytes_per_second = 1;
    monitoring.allowable_throughput_failure_interval_seconds = config.read_timeout_s;
    cc.monitoring_options = &monitoring;
  }
  aws_retry_strategy *retry = nullptr;
  if (config.max_attempts <= 1) {
    retry = new_single_attempt_strategy(alloc, runtime->event_loop_group());
    cc.retry_strategy = retry;
  } else {
    cc.retry_config.max_retries = config.max_attempts - 1;
  }
  client = aws_s3_client_new(alloc, &cc);
  int err = client ? 0 : aws_last_error();
  if (tls) aws_tls_connection_options_clean_up(&tls_options);
  aws_retry_strategy_release(retry);
  if (!client) {
    aws_credentials_provider_release(credentials);
    throw make_error("CreateClient", "", "", err, 0, "", "");
  }
  pool = pool_ctx.created;
}

Client::Impl::~Impl() {
  if (forked_since(pid)) return;  // the parent's CRT objects cannot be released in a forked child
  aws_s3_client_release(client);
  aws_credentials_provider_release(credentials);
}

Target Client::Impl::target(const std::string &bucket, const std::string &key) const {
  // Virtual-hosted style needs a DNS-compatible bucket name; dots break TLS wildcard certificates.
  bool path_style = path_style_default || bucket.find('.') != std::string::npos;
  std::string authority = host;
  bool default_port = port == 0 || (scheme == "https" && port == 443) || (scheme == "http" && port == 80);
  if (!default_port) authority += ":" + std::to_string(port);
  Target t;
  if (path_style) {
    t.host = authority;
    t.path = "/" + bucket;
    if (!key.empty()) t.path += "/" + encode_path(key);
  } else {
    t.host = bucket + "." + authority;
    t.path = "/" + encode_path(key);
  }
  t.endpoint_uri = scheme + "://" + t.host;
  return t;
}

aws_http_message *Client::Impl::new_message(const char *method, const Target &t) const {
  aws_http_message *m = aws_http_message_new_request(runtime->allocator());
  aws_http_message_set_request_method(m, aws_byte_cursor_from_c_str(method));
  aws_http_message_set_request_path(m, cur(t.path));
  add_header(m, "Host", t.host);
  add_header(m, "User-Agent", user_agent);
  // aws-c-s3 copies this header into the multipart upload's part, complete and abort requests.
  if (config.requester_pays) add_header(m, "x-amz-request-payer", "requester");
  return m;
}

// ---------------------------------------------------------------------------------------------
// Client

Client::Client(ClientConfig config) : impl_(std::make_shared<Impl>(std::move(config))) {}
Client::~Client() = default;

const ClientConfig &Client::config() const { return impl_->config; }

PoolStats Client::pool_stats() const { return impl_->pool ? impl_->pool->stats() : PoolStats{}; }

void Client::register_host_memory(std::shared_ptr<HostRegistrar> registrar) {
  if (impl_->pool) impl_->pool->set_registrar(std::move(registrar));
}

uint64_t Client::read_window() const { return impl_->read_window; }

std::string Client::request_url(const std::string &bucket, const std::string &key) const {
  Target t = impl_->target(bucket, key);
  return t.endpoint_uri + t.path;
}

const Counters &Client::counters() const { return *impl_->counters; }

ObjectInfo Client::head(const std::string &bucket, const std::string &key) {
  auto r = run_simple(impl_, "HeadObject", "HEAD", bucket, key, "", {});
  ObjectInfo info;
  info.key = key;
  info.etag = r->response_headers_etag;
  info.size = r->content_length.empty() ? 0 : std::strtoull(r->content_length.c_str(), nullptr, 10);
  info.last_modified = parse_date(r->last_modified, AWS_DATE_FORMAT_RFC822);
  if (!r->storage_class.empty()) info.storage_class = r->storage_class;
  if (!r->restore.empty()) info.restore = r->restore;
  return info;
}

ListPage Client::list(const std::string &bucket, const std::string &prefix, const std::string &delimiter,
                      int max_keys, const std::string &token) {
  // Parameters in sorted order, as SigV4's canonical query string wants them.
  std::string q;
  if (!token.empty()) q += "continuation-token=" + encode_param(token) + "&";
  if (!delimiter.empty()) q += "delimiter=" + encode_param(delimiter) + "&";
  q += "list-type=2&max-keys=" + std::to_string(max_keys);
  if (!prefix.empty()) q += "&prefix=" + encode_param(prefix);
  auto r = run_simple(impl_, "ListObjectsV2", "GET", bucket, "", q, {});
  ListPage page;
  std::string_view doc = r->body;
  for (auto c : xml::find_all(doc, "Contents")) {
    ObjectInfo o;
    o.key = xml::text(c, "Key");
    o.etag = xml::text(c, "ETag");
    o.size = std::strtoull(xml::text(c, "Size").c_str(), nullptr, 10);
    o.last_modified = parse_date(xml::text(c, "LastModified"), AWS_DATE_FORMAT_ISO_8601);
    std::string sc = xml::text(c, "StorageClass");
    if (!sc.empty()) o.storage_class = sc;
    page.objects.push_back(std::move(o));
  }
  for (auto p : xml::find_all(doc, "CommonPrefixes")) page.common_prefixes.push_back(xml::text(p, "Prefix"));
  page.truncated = xml::text(doc, "IsTruncated") == "true";
  page.next_continuation_token = xml::text(doc, "NextContinuationToken");
  return page;
}

void Client::remove(const std::string &bucket, const std::string &key) {
  run_simple(impl_, "DeleteObject", "DELETE", bucket, key, "", {});
}

void Client::copy(const std::string &src_bucket, const std::string &src_key, const std::string &dst_bucket,
                  const std::string &dst_key) {
  std::string source = "/" + src_bucket + "/" + encode_path(src_key);
  run_simple(impl_, "CopyObject", "PUT", dst_bucket, dst_key, "", {{"x-amz-copy-source", source}});
}

std::unique_ptr<GetStream> Client::get(const std::string &bucket, const std::string &key,
                                       std::optional<uint64_t> start, std::optional<uint64_t> end,
                                       std::shared_ptr<ScatterMap> scatter, std::shared_ptr<EtagPin> pin) {
  return start_get(impl_, bucket, key, start, end, std::move(scatter), std::move(pin));
}

namespace {

// A missing start is 0: an end before it is a usage error, an end equal to it an empty range.
void check_range(std::optional<uint64_t> start, std::optional<uint64_t> end) {
  if (end && *end < start.value_or(0)) {
    throw UsageError("invalid range: end (" + std::to_string(*end) + ") is before start (" +
                     std::to_string(start.value_or(0)) + ")");
  }
}

// A GET of bytes [start, end) (nullopt = from 0 / to the end) of the object, of the version the
// request's pin holds (If-Match) if it holds one. Caller releases.
aws_http_message *get_message(const Client::Impl &impl, RequestBase &r, std::optional<uint64_t> start,
                              std::optional<uint64_t> end) {
  aws_http_message *m = impl.new_message("GET", impl.target(r.bucket, r.key));
  if (start || end) {
    r.range = "bytes=" + std::to_string(start.value_or(0)) + "-";
    if (end) r.range += std::to_string(*end - 1);  // HTTP ranges are inclusive
    add_header(m, "Range", r.range);
  }
  std::string pinned = r.pin ? r.pin->get() : std::string();
  if (!pinned.empty()) r.if_match = "\"" + pinned + "\"";
  if (!r.if_match.empty()) add_header(m, "If-Match", r.if_match);
  return m;
}

// GETs ask for the server's checksum and check each response that carries one before its body is
// handed on. A ranged response carries none on the stores we know (S3, SeaweedFS, moto): those cost
// nothing. REQUEST_ONLY: no HeadObject to learn a whole-object checksum a ranged GET cannot use.
void ask_for_checksums(const Client::Impl &impl, aws_s3_meta_request_options &o, aws_s3_checksum_config &ck) {
  if (!impl.config.download_checksum) return;
  ck.validate_response_checksum = true;
  ck.response_checksum_validation_mode = AWS_SCVM_REQUEST_ONLY;
  o.checksum_config = &ck;
}

// A GET with no Range whose body goes to dst[0, size); more than `size` bytes fails it.
struct WholeGet : RequestBase {
  uint8_t *dst = nullptr;
  uint64_t size = 0;
  uint64_t landed = 0;     // body callbacks of one meta request never overlap
  bool too_long = false;
  int on_body(const aws_byte_cursor *b, uint64_t range_start, aws_s3_buffer_ticket *) override {
    if (range_start > size || b->len > size - range_start) {
      std::lock_guard<std::mutex> lock(mu);
      too_long = true;
      return aws_raise_error(AWS_ERROR_S3_CANCELED);
    }
    std::memcpy(dst + range_start, b->ptr, b->len);
    landed += b->len;
    return AWS_OP_SUCCESS;
  }
};

// The CRT's review of a multipart upload's parts (on an event-loop thread, before it completes the
// upload): the full-object CRC32C is combined from the parts' own, in part order. A part without a
// CRC32C leaves it unknown, and the upload then fails rather than send a wrong one.
int review_parts(aws_s3_meta_request *, const aws_s3_upload_review *review, void *user_data) noexcept {
  auto *st = static_cast<PutStream::State *>(static_cast<RequestBase *>(user_data));
  std::optional<uint32_t> crc;
  if (review->part_count == 0) crc = 0;  // the CRC32C of no bytes
  for (size_t i = 0; i < review->part_count; ++i) {
    const aws_s3_upload_part_review &part = review->part_array[i];
    uint8_t be[8] = {0};
    aws_byte_buf raw = aws_byte_buf_from_empty_array(be, sizeof be);
    if (review->checksum_algorithm != AWS_SCA_CRC32C || aws_base64_decode(&part.checksum, &raw) != AWS_OP_SUCCESS ||
        raw.len != 4) {
      crc.reset();
      break;
    }
    uint32_t c = uint32_t(be[0]) << 24 | uint32_t(be[1]) << 16 | uint32_t(be[2]) << 8 | uint32_t(be[3]);
    crc = crc ? aws_checksums_crc32c_combine(*crc, c, part.size) : c;
  }
  std::lock_guard<std::mutex> lock(st->mu);
  st->crc32c = crc;
  return AWS_OP_SUCCESS;
}

// The upload's full-object checksum (CompleteMultipartUpload, on the event-loop thread that just ran
// review_parts): base64 of the CRC32C's big-endian bytes, as S3 writes checksums. With it the object
// gets a FULL_OBJECT checksum instead of a composite one, which a whole-object GET can check.
aws_string *full_object_crc32c(aws_s3_meta_request *, void *user_data) noexcept {
  auto *st = static_cast<PutStream::State *>(user_data);
  std::optional<uint32_t> known;
  {
    std::lock_guard<std::mutex> lock(st->mu);
    known = st->crc32c;
  }
  if (!known) {
    aws_raise_error(AWS_ERROR_INVALID_STATE);
    return nullptr;
  }
  uint32_t crc = *known;
  uint8_t be[4] = {uint8_t(crc >> 24), uint8_t(crc >> 16), uint8_t(crc >> 8), uint8_t(crc)};
  aws_byte_cursor raw = aws_byte_cursor_from_array(be, sizeof be);
  uint8_t text[16] = {0};
  aws_byte_buf out = aws_byte_buf_from_empty_array(text, sizeof text);
  if (aws_base64_encode(&raw, &out) != AWS_OP_SUCCESS) return nullptr;
  return aws_string_new_from_buf(st->owner->runtime->allocator(), &out);
}

}  // namespace

std::unique_ptr<GetStream> start_get(const std::shared_ptr<Client::Impl> &impl, const std::string &bucket,
                                     const std::string &key, std::optional<uint64_t> start,
                                     std::optional<uint64_t> end, std::shared_ptr<ScatterMap> scatter,
                                     std::shared_ptr<EtagPin> pin) {
  check_range(start, end);
  if (scatter && scatter->ranges().empty()) scatter.reset();
  if (scatter) {
    if (!kScatterSupported) throw UsageError("scatter needs the bundled AWS CRT (S3TORCH_USE_SYSTEM_CRT=OFF)");
    if (!impl->pool) throw UsageError("scatter needs the client's part-buffer pool");
    if (!start || !end) throw UsageError("scatter needs a GET with an explicit start and end");
    uint64_t prev = *start;
    for (const ScatterRange &r : scatter->ranges()) {
      if (r.start < prev || r.end < r.start || r.end > *end || (r.end > r.start && !r.dst)) {
        throw UsageError("scatter ranges must be sorted, disjoint and inside the GET's range");
      }
      prev = r.end;
    }
  }
  auto st = new_request<GetStream::State>(impl, "GetObject", bucket, key);
  st->start = start;
  st->end = end;
  st->position = start.value_or(0);
  st->pin = std::move(pin);
  impl->counters->get_streams++;
  if (end && *end == start.value_or(0)) {
    // HTTP cannot ask for zero bytes: an empty range is an empty stream, no request.
    st->finished = true;
    st->shut_down = true;
    return std::make_unique<GetStream>(st);
  }
  aws_http_message *m = get_message(*impl, *st, start, end);
  aws_s3_meta_request_options o{};
  o.type = AWS_S3_META_REQUEST_TYPE_GET_OBJECT;
  o.body_callback_ex = on_body_callback;
  aws_s3_checksum_config ck{};
  ask_for_checksums(*impl, o, ck);
  if (!scatter) {
    st->launch(o, m, st);
    return std::make_unique<GetStream>(st);
  }
  // Counted into the client's counters (which the map's tickets then keep alive).
  scatter->set_counter(std::shared_ptr<std::atomic<uint64_t>>(impl->counters, &impl->counters->scatter_bytes));
  st->scatter = scatter;
  st->launch_receiving(o, m, st, PoolReceiver{nullptr, std::move(scatter)});
  return std::make_unique<GetStream>(st);
}

std::unique_ptr<DirectGet> Client::get_into(const std::string &bucket, const std::string &key, uint64_t start,
                                            uint64_t end, uint8_t *dst, uint64_t part_size,
                                            std::shared_ptr<EtagPin> pin, bool whole_object) {
  check_range(start, end);
  if (!impl_->pool) throw UsageError("get_into needs the client's part-buffer pool");
  if (whole_object && start != 0) throw UsageError("a whole-object GET starts at 0");
  auto st = new_request<DirectGet::State>(impl_, "GetObject", bucket, key);
  st->start = start;
  st->sink.base = dst;
  st->sink.size = end - start;
  st->pin = std::move(pin);
  impl_->counters->direct_gets++;
  if (start == end) {  // HTTP cannot ask for zero bytes: nothing to do
    st->finished = st->shut_down = st->ok = true;
    return std::make_unique<DirectGet>(st);
  }
  aws_http_message *m = whole_object ? get_message(*impl_, *st, std::nullopt, std::nullopt)
                                      : get_message(*impl_, *st, start, end);
  aws_s3_meta_request_options o{};
  o.type = AWS_S3_META_REQUEST_TYPE_GET_OBJECT;
  o.body_callback_ex = on_body_callback;
  o.part_size = part_size;
  aws_s3_checksum_config ck{};
  ask_for_checksums(*impl_, o, ck);
  if (whole_object && o.checksum_config) ck.response_checksum_validation_mode = AWS_SCVM_FULL_OBJECT;
  st->launch_receiving(o, m, st, PoolReceiver{&st->sink, nullptr});
  // Its parts land in caller memory, not in the pool: no read window applies.
  if (st->meta) aws_s3_meta_request_increment_read_window(st->meta, end - start);
  return std::make_unique<DirectGet>(st);
}

namespace {

// One GET of the whole object with no Range (DEFAULT: one request as written; the auto-ranged type
// would add a Range or a partNumber, and stores send the object's checksum only with a plain GET),
// its body checked by the CRT before it reaches dst. Throws S3Error.
void plain_whole_get(const std::shared_ptr<Client::Impl> &impl, const std::string &bucket, const std::string &key,
                     uint8_t *dst, uint64_t size, const std::shared_ptr<EtagPin> &pin) {
  auto st = new_request<WholeGet>(impl, "GetObject", bucket, key);
  st->dst = dst;
  st->size = size;
  st->pin = pin;
  impl->counters->direct_gets++;
  aws_http_message *m = get_message(*impl, *st, std::nullopt, std::nullopt);
  aws_s3_meta_request_options o{};
  o.type = AWS_S3_META_REQUEST_TYPE_DEFAULT;
  o.operation_name = aws_byte_cursor_from_c_str("GetObject");
  o.body_callback_ex = on_body_callback;
  aws_s3_checksum_config ck{};
  ck.validate_response_checksum = true;
  o.checksum_config = &ck;
  st->launch(o, m, st);
  if (st->meta) aws_s3_meta_request_increment_read_window(st->meta, size);
  st->wait_finished();
  aws_s3_meta_request_release(st->meta);
  if (st->too_long || (st->crt_error == AWS_ERROR_SUCCESS && st->landed != size)) {
    throw S3Error("GetObject s3://" + bucket + "/" + key + " failed: the object is " +
                      (st->too_long ? "larger" : "smaller (" + std::to_string(st->landed) + " bytes)") +
                      " than the " + std::to_string(size) +
                      " bytes its listing gave; it changed since, list or open it again",
                  "GetObject", bucket, key, 0, "SizeMismatch", st->request_id, 0);
  }
  if (st->crt_error != AWS_ERROR_SUCCESS) throw st->error();
  impl->counters->bytes_downloaded += size;
}

}  // namespace

void Client::get_fresh(const std::string &bucket, const std::string &key, uint64_t start, uint64_t end,
                       uint8_t *dst, std::shared_ptr<EtagPin> pin, bool whole_object) {
  Prefault prefault(dst, end - start, &impl_->counters->prefaulted_bytes);
  if (whole_object) {
    get_whole(bucket, key, dst, end, std::move(pin));
  } else {
    get_into(bucket, key, start, end, dst, 0, std::move(pin))->wait();
  }
}

void Client::get_whole(const std::string &bucket, const std::string &key, uint8_t *dst, uint64_t size,
                       std::shared_ptr<EtagPin> pin) {
  if (!impl_->config.download_checksum) {
    // Nothing to check: a whole object is just a range, and the in-place path is faster.
    get_into(bucket, key, 0, size, dst, 0, std::move(pin))->wait();
    return;
  }
  // The CRT does not retry a checksum mismatch (it fails the meta request): we do, as it retries a
  // reset, while attempts are left.
  const uint32_t attempts = std::max<uint32_t>(1, impl_->config.max_attempts);
  for (uint32_t attempt = 1;; ++attempt) {
    try {
      if (size <= impl_->config.part_size) {
        plain_whole_get(impl_, bucket, key, dst, size, pin);
      } else {
        // Parts in parallel, straight into dst, checked as a whole against the object's checksum
        // (which the CRT learns with a HeadObject).
        get_into(bucket, key, 0, size, dst, 0, pin, true)->wait();
      }
      return;
    } catch (const S3Error &e) {
      if (e.crt_error != AWS_ERROR_S3_RESPONSE_CHECKSUM_MISMATCH || attempt >= attempts) throw;
      log_lazy(AWS_LL_DEBUG, [&] {
        return "checksum mismatch, retrying (attempt " + std::to_string(attempt) + " of " +
               std::to_string(attempts) + "): GetObject s3://" + bucket + "/" + key;
      });
    }
  }
}

std::unique_ptr<PutStream> Client::put(const std::string &bucket, const std::string &key,
                                       const std::string &storage_class) {
  auto st = new_request<PutStream::State>(impl_, "PutObject", bucket, key);
  impl_->counters->put_streams++;
  Target t = impl_->target(bucket, key);
  aws_http_message *m = impl_->new_message("PUT", t);
  if (!storage_class.empty()) {
    add_header(m, "x-amz-storage-class", storage_class);
  }
  aws_s3_meta_request_options o{};
  o.type = AWS_S3_META_REQUEST_TYPE_PUT_OBJECT;
  o.send_using_async_writes = true;
  // Every part carries its CRC32C in a trailer: the server checks what it stored against what we
  // sent, so bytes corrupted on the way fail the part (and are retried) instead of landing.
  aws_s3_checksum_config checksum{};
  if (impl_->config.upload_checksum) {
    checksum.location = AWS_SCL_TRAILER;
    checksum.checksum_algorithm = AWS_SCA_CRC32C;
    checksum.full_object_checksum_callback = full_object_crc32c;
    checksum.user_data = st.get();  // lives until the CRT's shutdown callback
    o.checksum_config = &checksum;
    o.upload_review_callback = review_parts;
  }
  st->launch(o, m, st);
  return std::make_unique<PutStream>(st);
}

}  // namespace s3torch
