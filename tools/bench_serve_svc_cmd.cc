// icae bench serve --encoder ADDR --decoder ADDR [--concurrency 1,4,8,16] [--context-tokens 2048]
//                  [--max-new-tokens 64] [--requests 2] [--no-baseline] [--prompt-tokens 16]
// Encodes one random-id context per stream, then for each concurrency N runs N client streams,
// each sending --requests Generate calls back to back (greedy, ignore_eos), and reports the
// aggregate generated tokens/s, time to first token p50/p99 and inter-token latency p50/p99 —
// with slots and, side by side, over the raw context (the uncompressed baseline).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/server/client.h"
#include "common/server/status.h"
#include "icae/v1/icae.grpc.pb.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct RunStats {
  int64_t tokens = 0;
  double wall = 0;
  std::vector<double> ttft, itl;
  int errors = 0;
  std::string first_error;
};

RunStats RunLoad(const std::shared_ptr<grpc::Channel>& ch, const server::ClientOptions& co, int n,
                 int requests, const std::vector<icae::v1::GenerateRequest>& reqs) {
  RunStats out;
  std::mutex mu;
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int s = 0; s < n; ++s) {
    threads.emplace_back([&, s] {
      auto stub = icae::v1::Decoder::NewStub(ch);
      for (int k = 0; k < requests; ++k) {
        const auto& req = reqs[static_cast<size_t>(s) % reqs.size()];
        grpc::ClientContext ctx;
        server::AddAuth(&ctx, co);
        auto start = Clock::now();
        auto reader = stub->Generate(&ctx, req);
        icae::v1::GenerateResponse msg;
        auto last = start;
        bool first = true;
        int64_t tokens = 0;
        std::vector<double> itl;
        double ttft = 0;
        while (reader->Read(&msg)) {
          if (msg.token_ids_size() == 0) continue;
          auto now = Clock::now();
          double dt = std::chrono::duration<double>(now - last).count();
          if (first) {
            ttft = dt;
            first = false;
            // A coalesced first message: the rest of its tokens count as zero-gap.
            for (int j = 1; j < msg.token_ids_size(); ++j) itl.push_back(0);
          } else {
            for (int j = 0; j < msg.token_ids_size(); ++j) itl.push_back(dt / msg.token_ids_size());
          }
          tokens += msg.token_ids_size();
          last = now;
        }
        grpc::Status st = reader->Finish();
        std::lock_guard<std::mutex> lock(mu);
        if (!st.ok()) {
          if (out.errors++ == 0) out.first_error = st.error_message();
          continue;
        }
        out.tokens += tokens;
        out.ttft.push_back(ttft);
        out.itl.insert(out.itl.end(), itl.begin(), itl.end());
      }
    });
  }
  for (auto& t : threads) t.join();
  out.wall = std::chrono::duration<double>(Clock::now() - t0).count();
  return out;
}

int BenchServe(const std::vector<std::string>& argv) {
  const std::string cmd = "bench serve";
  auto args = Args::Parse(argv, {"encoder", "decoder", "concurrency", "context-tokens", "max-new-tokens",
                                 "requests", "prompt-tokens", "api-key", "seed"},
                          {"no-baseline"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("encoder") || !args->Has("decoder")) {
    return Fail(cmd, "usage: icae bench serve --encoder HOST:PORT --decoder HOST:PORT [--concurrency 1,4,8,16] "
                     "[--context-tokens 2048] [--max-new-tokens 64] [--requests 2] [--no-baseline]", 2);
  }
  std::vector<int> levels;
  for (absl::string_view p : absl::StrSplit(args->Get("concurrency", "1,4,8,16"), ',', absl::SkipEmpty())) {
    int v = std::atoi(std::string(p).c_str());
    if (v < 1) return Fail(cmd, "--concurrency takes positive integers, e.g. 1,4,8,16", 2);
    levels.push_back(v);
  }
  const int64_t context_tokens = *args->GetInt("context-tokens", 2048);
  const int64_t max_new = *args->GetInt("max-new-tokens", 64);
  const int requests = static_cast<int>(*args->GetInt("requests", 2));
  const int64_t prompt_tokens = *args->GetInt("prompt-tokens", 16);
  server::ClientOptions co;
  co.api_key = args->Get("api-key");
  auto ech = server::MakeChannel(args->Get("encoder"), co);
  auto dch = server::MakeChannel(args->Get("decoder"), co);
  if (!ech.ok() || !dch.ok()) return Fail(cmd, "bad address");
  auto dstub = icae::v1::Decoder::NewStub(*dch);
  icae::v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    server::AddAuth(&ctx, co);
    grpc::Status st = dstub->GetModelInfo(&ctx, {}, &info);
    if (!st.ok()) return Fail(cmd, "GetModelInfo: " + st.error_message());
  }
  const int64_t L = std::min(context_tokens, info.max_context_tokens());
  const int max_level = *std::max_element(levels.begin(), levels.end());
  std::mt19937_64 rng(static_cast<uint64_t>(*args->GetInt("seed", 1)));
  std::uniform_int_distribution<int64_t> dist(3, info.base_vocab_size() - 1);
  auto estub = icae::v1::Encoder::NewStub(*ech);
  std::vector<icae::v1::GenerateRequest> slot_reqs, base_reqs;
  double encode_seconds = 0;
  for (int s = 0; s < max_level; ++s) {
    icae::v1::EncodeRequest ereq;
    ereq.mutable_token_ids()->add_ids(1);
    for (int64_t i = 1; i < L; ++i) ereq.mutable_token_ids()->add_ids(dist(rng));
    grpc::ClientContext ctx;
    server::AddAuth(&ctx, co);
    icae::v1::EncodeResponse er;
    auto t0 = Clock::now();
    grpc::Status st = estub->Encode(&ctx, ereq, &er);
    encode_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    if (!st.ok()) return Fail(cmd, "Encode: " + st.error_message());
    icae::v1::GenerateRequest g;
    g.set_mode(icae::v1::MODE_RAW);
    for (int64_t i = 0; i < prompt_tokens; ++i) g.mutable_prompt_ids()->add_ids(dist(rng));
    g.mutable_stopping()->set_max_new_tokens(max_new);
    g.mutable_stopping()->set_ignore_eos(true);
    icae::v1::GenerateRequest b = g;
    g.add_slot_ids(er.slot_id());
    *b.mutable_context_ids() = ereq.token_ids();
    slot_reqs.push_back(g);
    base_reqs.push_back(b);
  }
  std::printf("bench serve: %lld-token contexts (%lld slots each), %lld prompt tokens, %lld new tokens, "
              "%d requests per stream; encode %.1f ms/context (sequential)\n",
              static_cast<long long>(L), static_cast<long long>((L + info.mem_size() * info.rate() - 1) /
                                                                (info.mem_size() * info.rate()) * info.mem_size()),
              static_cast<long long>(prompt_tokens), static_cast<long long>(max_new), requests,
              encode_seconds * 1e3 / max_level);
  std::printf("%-9s %5s %10s %10s %10s %9s %9s %6s\n", "input", "N", "tok/s", "ttft_p50", "ttft_p99",
              "itl_p50", "itl_p99", "errors");
  // Warm up once (first-call allocations).
  RunLoad(*dch, co, 1, 1, slot_reqs);
  double one_stream = 0, slots_tps = 0;
  for (int n : levels) {
    for (int pass = 0; pass < (args->Has("no-baseline") ? 1 : 2); ++pass) {
      const auto& reqs = pass == 0 ? slot_reqs : base_reqs;
      RunStats r = RunLoad(*dch, co, n, requests, reqs);
      double tps = r.wall > 0 ? r.tokens / r.wall : 0;
      if (pass == 0 && n == 1) one_stream = tps;
      if (pass == 0) slots_tps = tps;
      std::printf("%-9s %5d %10.1f %8.1fms %8.1fms %7.1fms %7.1fms %6d%s\n", pass == 0 ? "slots" : "baseline", n, tps,
                  Percentile(r.ttft, 0.5) * 1e3, Percentile(r.ttft, 0.99) * 1e3, Percentile(r.itl, 0.5) * 1e3,
                  Percentile(r.itl, 0.99) * 1e3, r.errors, r.errors ? (" (" + r.first_error + ")").c_str() : "");
      std::fflush(stdout);
    }
    if (n > 1 && one_stream > 0) {
      std::printf("          slots at N=%d: %.2fx the tokens/s of one stream\n", n, slots_tps / one_stream);
    }
  }
  return 0;
}

ICAE_REGISTER_COMMAND("bench serve", "load-test the services: tokens/s, TTFT and inter-token latency vs concurrency", BenchServe);

}  // namespace
}  // namespace icae::tools
