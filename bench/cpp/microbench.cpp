// Microbenchmarks of the C++ core, through its public headers only (no Python):
//   GetDrain/GetInto  a whole object from a local S3 server, drained into one buffer (stream + read_into,
//                     and straight into the buffer), against Memcpy of the same size: the copy limit;
//   ChunkHandoff      a stream's parts from the CRT thread that queued them to the consumer (latency);
//   PoolReserveRelease part-buffer tickets through the aws-c-s3 pool interface, per second;
//   Coalesce          grouping 100k sorted item ranges into GETs.
// The server benchmarks need S3TORCH_BENCH_ENDPOINT, S3TORCH_BENCH_BUCKET and S3TORCH_BENCH_KEY (and
// credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); bench/cpp/run.py starts SeaweedFS and sets them.
#include <aws/s3/s3_buffer_pool.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "s3torch/buffer_pool.hpp"
#include "s3torch/client.hpp"
#include "s3torch/coalesce.hpp"
#include "s3torch/direct_get.hpp"
#include "s3torch/get_stream.hpp"
#include "s3torch/runtime.hpp"

namespace {

using s3torch::Client;

std::string env(const char *name) {
  const char *v = std::getenv(name);
  return v ? v : "";
}

struct Target {
  std::string endpoint = env("S3TORCH_BENCH_ENDPOINT");
  std::string bucket = env("S3TORCH_BENCH_BUCKET");
  std::string key = env("S3TORCH_BENCH_KEY");
  bool set() const { return !endpoint.empty() && !bucket.empty() && !key.empty(); }
};

Client &client() {
  static Client c([] {
    s3torch::ClientConfig config;
    config.endpoint = Target().endpoint;
    config.force_path_style = true;
    config.region = env("AWS_REGION").empty() ? "us-east-1" : env("AWS_REGION");
    return config;
  }());
  return c;
}

// Pages written once before timing, so that no benchmark measures first-touch page faults.
std::vector<uint8_t> touched(size_t n) { return std::vector<uint8_t>(n, 1); }

void GetDrain(benchmark::State &state, Target t, uint64_t size) {
  std::vector<uint8_t> dst = touched(size);
  for (auto _ : state) {
    auto stream = client().get(t.bucket, t.key, std::nullopt, std::nullopt);
    if (stream->read_into(dst.data(), size) != size) state.SkipWithError("short read");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void GetInto(benchmark::State &state, Target t, uint64_t size) {
  std::vector<uint8_t> dst = touched(size);
  for (auto _ : state) client().get_into(t.bucket, t.key, 0, size, dst.data())->wait();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void Memcpy(benchmark::State &state, uint64_t size) {
  std::vector<uint8_t> src = touched(size), dst = touched(size);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), size);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The consumer waits in next() while parts download, so each part's latency is from the moment the CRT
// thread queued it to the moment next() returned it here.
void ChunkHandoff(benchmark::State &state, Target t) {
  double total_us = 0, max_us = 0;
  int64_t chunks = 0;
  for (auto _ : state) {
    auto stream = client().get(t.bucket, t.key, std::nullopt, std::nullopt);
    while (auto chunk = stream->next()) {
      double us = static_cast<double>(now_ns() - chunk->queued_ns) / 1e3;
      total_us += us;
      max_us = std::max(max_us, us);
      ++chunks;
    }
  }
  state.counters["chunks"] = static_cast<double>(chunks);
  state.counters["handoff_us_mean"] = chunks ? total_us / static_cast<double>(chunks) : 0;
  state.counters["handoff_us_max"] = max_us;
}

// Reserve, claim and release part buffers, `batch` outstanding at a time (the CRT's pattern: several
// parts in flight), through the same C interface aws-c-s3 calls.
void PoolReserveRelease(benchmark::State &state) {
  const size_t part = 8u << 20;
  const size_t batch = static_cast<size_t>(state.range(0));
  s3torch::PoolFactoryContext ctx;
  ctx.memory_limit = 1ull << 30;
  aws_s3_buffer_pool_config config{};
  config.part_size = part;
  config.max_part_size = part;
  config.memory_limit = ctx.memory_limit;
  aws_s3_buffer_pool *pool = s3torch::pool_factory(s3torch::Runtime::get()->allocator(), config, &ctx);
  std::vector<aws_s3_buffer_ticket *> tickets(batch);
  for (auto _ : state) {
    for (auto &ticket : tickets) {
      aws_s3_buffer_pool_reserve_meta meta{};
      meta.size = part;
      aws_future_s3_buffer_ticket *future = aws_s3_buffer_pool_reserve(pool, meta);
      ticket = aws_future_s3_buffer_ticket_get_result_by_move(future);
      aws_future_s3_buffer_ticket_release(future);
      benchmark::DoNotOptimize(aws_s3_buffer_ticket_claim(ticket).buffer);
    }
    for (auto *ticket : tickets) aws_s3_buffer_ticket_release(ticket);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
  state.counters["mapped_MiB"] = static_cast<double>(ctx.created->stats().mapped_bytes >> 20);
  aws_s3_buffer_pool_release(pool);
}

// A plan's item ranges of one file: 4 KiB to 4 MiB each, a third of them with a gap before them.
void Coalesce(benchmark::State &state) {
  std::mt19937_64 rng(7);
  std::vector<s3torch::ByteSpan> spans(static_cast<size_t>(state.range(0)));
  uint64_t pos = 0;
  for (auto &s : spans) {
    if (rng() % 3 == 0) pos += rng() % (8u << 20);
    s.start = pos;
    pos += 4096 + rng() % (4u << 20);
    s.end = pos;
  }
  size_t groups = 0;
  for (auto _ : state) {
    s3torch::CoalesceIssue issue;
    auto out = s3torch::coalesce(spans, 1 << 20, issue);
    groups = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * spans.size()));
  state.counters["groups"] = static_cast<double>(groups);
}

}  // namespace

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  Target t;
  uint64_t size = 0;
  if (t.set()) {
    size = client().head(t.bucket, t.key).size;
    benchmark::RegisterBenchmark("GetDrain", GetDrain, t, size)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("GetInto", GetInto, t, size)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("ChunkHandoff", ChunkHandoff, t)->UseRealTime()->Unit(benchmark::kMillisecond);
  } else {
    std::fprintf(stderr, "S3TORCH_BENCH_ENDPOINT/_BUCKET/_KEY not set: the server benchmarks are left out\n");
  }
  benchmark::RegisterBenchmark("Memcpy", Memcpy, size ? size : (256ull << 20))->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("PoolReserveRelease", PoolReserveRelease)->Arg(1)->Arg(16);
  benchmark::RegisterBenchmark("Coalesce", Coalesce)->Arg(100000)->Unit(benchmark::kMicrosecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
