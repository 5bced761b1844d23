#pragma once
// The S3 client: one aws_s3_client per config, with our buffer pool.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "s3torch/buffer_pool.hpp"

namespace s3torch {

class DirectGet;
class GetStream;
class PutStream;

struct ClientConfig {
  std::string region = "us-east-1";
  std::string endpoint;  // "" = AWS; else "http(s)://host[:port]"
  std::string user_agent_prefix;
  std::string profile;   // "" = default chain's choice
  double throughput_target_gbps = 10.0;
  uint64_t part_size = 8ull << 20;
  bool unsigned_requests = false;
  bool force_path_style = false;
  uint32_t max_attempts = 10;
  uint64_t memory_limit_bytes = 0;  // 0 = CRT default for the throughput target
  uint32_t read_timeout_s = 0;      // a connection moving no bytes this long is dropped (0: CRT's 30 s)
  bool upload_checksum = true;      // CRC32C trailer on every uploaded part
  bool requester_pays = false;      // x-amz-request-payer: requester on every request
  // GETs ask for the server's checksum (x-amz-checksum-mode) and check every response that carries
  // one; whole-object reads (get_whole) are made so that a server can send the object's own.
  bool download_checksum = true;
};

// The version of an object that several GETs of one reader or load must all read: the ETag of the
// first response, then sent as If-Match with every later GET. A GET already under way when the pin
// was set still checks its response's ETag against it, so bytes of two versions never mix silently.
class EtagPin {
 public:
  // The pinned ETag without quotes ("" while none), set by the first response (or listing) with one.
  std::string get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return etag_;
  }
  // Pins `etag` if nothing is pinned yet; returns whether it matches what is pinned now. Quotes and
  // a weak prefix are ignored: listings and headers of some stores differ in them.
  bool check(const std::string &etag) {
    std::string e = normalize(etag);
    std::lock_guard<std::mutex> lock(mu_);
    if (etag_.empty()) etag_ = e;
    return etag_ == e;
  }

 private:
  static std::string normalize(std::string e) {
    if (e.rfind("W/", 0) == 0) e.erase(0, 2);
    if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
    return e;
  }
  mutable std::mutex mu_;
  std::string etag_;
};

struct ObjectInfo {
  std::string key;
  std::string etag;
  uint64_t size = 0;
  int64_t last_modified = 0;  // seconds since the epoch
  std::optional<std::string> storage_class;
  std::optional<std::string> restore;  // raw x-amz-restore header, when present
};

struct ListPage {
  std::vector<ObjectInfo> objects;
  std::vector<std::string> common_prefixes;
  std::string next_continuation_token;
  bool truncated = false;
};

// Counters shared by a client and the streams it made (streams may outlive the client).
struct Counters {
  std::atomic<uint64_t> meta_requests{0};
  std::atomic<uint64_t> get_streams{0};
  std::atomic<uint64_t> put_streams{0};
  std::atomic<uint64_t> http_requests{0};      // individual HTTP requests, retries included
  std::atomic<uint64_t> failed_attempts{0};    // HTTP requests that failed (and were retried or not)
  std::atomic<uint64_t> bytes_downloaded{0};   // body bytes delivered to streams
  std::atomic<uint64_t> bytes_uploaded{0};     // body bytes accepted by put streams
  std::atomic<uint64_t> bytes_uploaded_in_place{0};  // of those, sent from the caller's memory (write_lent)
  std::atomic<uint64_t> chunk_copies{0};       // bodies delivered without a pool ticket (copied once)
  std::atomic<uint64_t> direct_gets{0};        // GETs into caller memory (get_into)
  std::atomic<uint64_t> direct_bytes{0};       // body bytes that arrived in place, in caller memory
  std::atomic<uint64_t> direct_fallbacks{0};   // direct GETs redone as streams (a part landed elsewhere)
  std::atomic<uint64_t> scatter_bytes{0};      // stream bytes written straight to a ScatterMap's memory
  std::atomic<uint64_t> validated_gets{0};     // GETs whose body matched the checksum the server sent
  std::atomic<uint64_t> checksum_mismatches{0};  // GET responses whose body did not (never handed out)
  std::atomic<uint64_t> prefaulted_bytes{0};   // fresh destination memory mapped in ahead of a GET

  // Calls f(name, value) for every counter: the one list the bindings build their dict from.
  template <class F>
  void for_each(F &&f) const {
    f("meta_requests", meta_requests.load());
    f("get_streams", get_streams.load());
    f("put_streams", put_streams.load());
    f("http_requests", http_requests.load());
    f("failed_attempts", failed_attempts.load());
    f("bytes_downloaded", bytes_downloaded.load());
    f("bytes_uploaded", bytes_uploaded.load());
    f("bytes_uploaded_in_place", bytes_uploaded_in_place.load());
    f("chunk_copies", chunk_copies.load());
    f("direct_gets", direct_gets.load());
    f("direct_bytes", direct_bytes.load());
    f("direct_fallbacks", direct_fallbacks.load());
    f("scatter_bytes", scatter_bytes.load());
    f("validated_gets", validated_gets.load());
    f("checksum_mismatches", checksum_mismatches.load());
    f("prefaulted_bytes", prefaulted_bytes.load());
  }
};

class Client {
 public:
  explicit Client(ClientConfig config);
  ~Client();
  Client(const Client &) = delete;
  Client &operator=(const Client &) = delete;

  // Bytes [start, end) of the object (end exclusive; nullopt = from 0 / to the end).
  // With `scatter` (which needs kScatterSupported), the bytes of its ranges, which must lie inside
  // [start, end), are written into its memory as they arrive; the stream still yields every byte
  // position, but what it holds at scattered ones is unspecified (skip them). The memory must stay
  // valid until the stream is closed or destroyed.
  // With `pin`, the GET reads the pinned version of the object (If-Match) or pins its own.
  std::unique_ptr<GetStream> get(const std::string &bucket, const std::string &key,
                                 std::optional<uint64_t> start, std::optional<uint64_t> end,
                                 std::shared_ptr<ScatterMap> scatter = nullptr,
                                 std::shared_ptr<EtagPin> pin = nullptr);
  // Starts a GET of bytes [start, end) that receives straight into dst[0, end - start), which must
  // stay valid until the returned DirectGet is destroyed or has finished (wait/cancel). part_size
  // (0: the client's) sets how the range is split into part requests: as the parts land in caller
  // memory, not in the pool, a direct GET may use larger ones (fewer requests).
  // `whole_object` (start 0, end the object's size): the GET is sent without a Range, so that with
  // download_checksum the CRT learns the object's checksum (a HeadObject) and checks every byte
  // against it, where the object has a full-object one (a composite "-N" one cannot be checked).
  std::unique_ptr<DirectGet> get_into(const std::string &bucket, const std::string &key, uint64_t start,
                                      uint64_t end, uint8_t *dst, uint64_t part_size = 0,
                                      std::shared_ptr<EtagPin> pin = nullptr, bool whole_object = false);
  // The whole object, `size` bytes (a listing's), into dst[0, size), read so that with
  // download_checksum it is checked against the checksum the server stored: up to a part with one
  // GET without a Range (checked before a byte reaches dst; the CRT holds the body once), larger
  // with get_into(whole_object). A mismatch is retried (max_attempts). Without download_checksum,
  // get_into of the range. Blocks. Throws S3Error if it fails or the object's size is not `size`.
  void get_whole(const std::string &bucket, const std::string &key, uint8_t *dst, uint64_t size,
                 std::shared_ptr<EtagPin> pin = nullptr);
  // get_whole(dst, end) if whole_object, else get_into(start, end, dst) and wait, for dst that is
  // fresh memory (a new bytes object): its pages are mapped in ahead of the transfer by a thread of
  // its own (Prefault), counted in prefaulted_bytes. Blocks.
  void get_fresh(const std::string &bucket, const std::string &key, uint64_t start, uint64_t end, uint8_t *dst,
                 std::shared_ptr<EtagPin> pin, bool whole_object);
  std::unique_ptr<PutStream> put(const std::string &bucket, const std::string &key,
                                 const std::string &storage_class);
  ObjectInfo head(const std::string &bucket, const std::string &key);
  ListPage list(const std::string &bucket, const std::string &prefix, const std::string &delimiter,
                int max_keys, const std::string &continuation_token);
  void remove(const std::string &bucket, const std::string &key);
  void copy(const std::string &src_bucket, const std::string &src_key, const std::string &dst_bucket,
            const std::string &dst_key);

  PoolStats pool_stats() const;
  // Registers the pool's slabs (now and later) with a GPU runtime: see BufferPool::set_registrar.
  void register_host_memory(std::shared_ptr<HostRegistrar> registrar);
  uint64_t read_window() const;  // bytes a GET stream may run ahead of its consumer
  // Where a request for bucket/key goes: scheme://host[:port]/path (path style or virtual-hosted).
  std::string request_url(const std::string &bucket, const std::string &key) const;
  const Counters &counters() const;
  const ClientConfig &config() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace s3torch
