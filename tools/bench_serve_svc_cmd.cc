// icae bench serve --encoder ADDR --decoder ADDR [--concurrency 1,4,8,16] [--context-tokens 2048]
//                  [--max-new-tokens 64] [--requests 2] [--no-baseline] [--prompt-tokens 16]
//                  [--questions-per-slot N [--question-contexts 4]]
//                  [--interference [--interference-streams 8] [--interference-context-tokens 2048]
//                   [--interference-new-tokens 128]]
// Encodes one random-id context per stream, then for each concurrency N runs N client streams,
// each sending --requests Generate calls back to back (greedy, ignore_eos), and reports the
// aggregate generated tokens/s, time to first token p50/p99 and inter-token latency p50/p99 —
// with slots and, side by side, over the raw context (the uncompressed baseline). Every
// context is used once before the levels run, so every slot request starts from the
// decoder's prefix cache, at each level alike.
// --questions-per-slot N: on fresh contexts, N different questions per context one after the
// other: TTFT of the first question (slot prefix computed) vs the repeats (prefix cached).
// --interference: inter-token p99 of running slot streams, steady, and while a raw-context
// request (the uncompressed baseline) of --interference-context-tokens is being prefilled.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
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

// Arrival times of every token of one streamed request (a coalesced message spreads its
// tokens evenly since the previous one).
struct StreamTimes {
  std::vector<Clock::time_point> tokens;
  grpc::Status status;
};

StreamTimes TimedGenerate(icae::v1::Decoder::Stub& stub, const server::ClientOptions& co,
                          const icae::v1::GenerateRequest& req, std::atomic<int64_t>* counter = nullptr) {
  StreamTimes out;
  grpc::ClientContext ctx;
  server::AddAuth(&ctx, co);
  const auto start = Clock::now();
  auto reader = stub.Generate(&ctx, req);
  icae::v1::GenerateResponse msg;
  auto last = start;
  while (reader->Read(&msg)) {
    const int k = msg.token_ids_size();
    if (k == 0) continue;
    const auto now = Clock::now();
    for (int j = 1; j <= k; ++j) {
      out.tokens.push_back(out.tokens.empty() && j == 1 ? now : last + (now - last) * j / k);
    }
    last = now;
    if (counter) counter->fetch_add(k);
  }
  out.status = reader->Finish();
  return out;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// First question on each fresh context vs the repeats (prefix cached), one stream.
int QuestionsPerSlot(const std::string& cmd, icae::v1::Encoder::Stub& estub, icae::v1::Decoder::Stub& dstub,
                     const server::ClientOptions& co, const std::function<int64_t()>& random_id,
                     int64_t context_tokens, int64_t prompt_tokens, int64_t max_new, int questions, int contexts) {
  std::vector<double> first, repeats;
  for (int c = 0; c < contexts; ++c) {
    icae::v1::EncodeRequest ereq;
    ereq.mutable_token_ids()->add_ids(1);
    for (int64_t i = 1; i < context_tokens; ++i) ereq.mutable_token_ids()->add_ids(random_id());
    grpc::ClientContext ctx;
    server::AddAuth(&ctx, co);
    icae::v1::EncodeResponse er;
    grpc::Status st = estub.Encode(&ctx, ereq, &er);
    if (!st.ok()) return Fail(cmd, "Encode: " + st.error_message());
    for (int q = 0; q < questions; ++q) {
      icae::v1::GenerateRequest g;
      g.set_mode(icae::v1::MODE_RAW);
      g.add_slot_ids(er.slot_id());
      for (int64_t i = 0; i < prompt_tokens; ++i) g.mutable_prompt_ids()->add_ids(random_id());
      g.mutable_stopping()->set_max_new_tokens(max_new);
      g.mutable_stopping()->set_ignore_eos(true);
      const auto t0 = Clock::now();
      StreamTimes r = TimedGenerate(dstub, co, g);
      if (!r.status.ok() || r.tokens.empty()) return Fail(cmd, "Generate: " + r.status.error_message());
      (q == 0 ? first : repeats).push_back(Seconds(r.tokens[0] - t0));
    }
  }
  const double f = Percentile(first, 0.5), rep = Percentile(repeats, 0.5);
  std::printf("questions per slot: %d questions on each of %d fresh %lld-token contexts, one stream\n", questions,
              contexts, static_cast<long long>(context_tokens));
  std::printf("          ttft first question p50 %.1f ms, repeats p50 %.1f ms (p99 %.1f ms): %.2fx lower\n", f * 1e3,
              rep * 1e3, Percentile(repeats, 0.99) * 1e3, rep > 0 ? f / rep : 0);
  std::fflush(stdout);
  return 0;
}

// Inter-token gaps of the streams; with a window, only the gaps that overlap it.
std::vector<double> Gaps(const std::vector<StreamTimes>& streams, Clock::time_point from, Clock::time_point to) {
  std::vector<double> gaps;
  for (const auto& s : streams) {
    for (size_t i = 1; i < s.tokens.size(); ++i) {
      if (s.tokens[i] > from && s.tokens[i - 1] < to) gaps.push_back(Seconds(s.tokens[i] - s.tokens[i - 1]));
    }
  }
  return gaps;
}

// Steady inter-token p99 of `streams` slot streams vs while a raw-context request is prefilled.
int Interference(const std::string& cmd, const std::shared_ptr<grpc::Channel>& ch, const server::ClientOptions& co,
                 const std::vector<icae::v1::GenerateRequest>& slot_reqs, const icae::v1::GenerateRequest& baseline,
                 int streams, int64_t new_tokens) {
  auto run = [&](bool with_baseline, Clock::time_point* send, Clock::time_point* first) -> std::vector<StreamTimes> {
    std::vector<StreamTimes> out(static_cast<size_t>(streams));
    std::atomic<int64_t> tokens{0};
    std::vector<std::thread> threads;
    for (int s = 0; s < streams; ++s) {
      threads.emplace_back([&, s] {
        auto stub = icae::v1::Decoder::NewStub(ch);
        auto req = slot_reqs[static_cast<size_t>(s) % slot_reqs.size()];
        req.mutable_stopping()->set_max_new_tokens(new_tokens);
        out[static_cast<size_t>(s)] = TimedGenerate(*stub, co, req, &tokens);
      });
    }
    if (with_baseline) {
      // Once every stream is decoding (a few tokens each), the long prefill arrives.
      for (int k = 0; k < 60000 && tokens.load() < 4 * streams; ++k) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      auto stub = icae::v1::Decoder::NewStub(ch);
      *send = Clock::now();
      StreamTimes b = TimedGenerate(*stub, co, baseline);
      *first = b.tokens.empty() ? Clock::now() : b.tokens[0];
      if (!b.status.ok()) std::printf("          baseline request failed: %s\n", b.status.error_message().c_str());
    }
    for (auto& t : threads) t.join();
    return out;
  };
  Clock::time_point send, first;
  auto steady = run(false, nullptr, nullptr);
  auto loaded = run(true, &send, &first);
  for (const auto* set : {&steady, &loaded}) {
    for (const auto& s : *set) {
      if (!s.status.ok()) return Fail(cmd, "Generate: " + s.status.error_message());
    }
  }
  const auto all = Gaps(steady, Clock::time_point::min(), Clock::time_point::max());
  const auto during = Gaps(loaded, send, first);
  const double p99 = Percentile(all, 0.99), p99_during = Percentile(during, 0.99);
  std::printf("interference: %d slot streams; a %d-token raw-context request prefilled in %.1f ms\n", streams,
              baseline.context_ids().ids_size(), Seconds(first - send) * 1e3);
  std::printf("          inter-token p99 steady %.1f ms, during the prefill %.1f ms (%zu gaps): %.2fx\n", p99 * 1e3,
              p99_during * 1e3, during.size(), p99 > 0 ? p99_during / p99 : 0);
  std::fflush(stdout);
  return 0;
}

int BenchServe(const std::vector<std::string>& argv) {
  const std::string cmd = "bench serve";
  auto args = Args::Parse(argv, {"encoder", "decoder", "concurrency", "context-tokens", "max-new-tokens",
                                 "requests", "prompt-tokens", "api-key", "seed", "questions-per-slot",
                                 "question-contexts", "interference-streams", "interference-context-tokens",
                                 "interference-new-tokens"},
                          {"no-baseline", "interference"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  if (!args->Has("encoder") || !args->Has("decoder")) {
    return Fail(cmd, "usage: icae bench serve --encoder HOST:PORT --decoder HOST:PORT [--concurrency 1,4,8,16] "
                     "[--context-tokens 2048] [--max-new-tokens 64] [--requests 2] [--no-baseline] "
                     "[--questions-per-slot N [--question-contexts 4]] [--interference [--interference-streams 8] "
                     "[--interference-context-tokens 2048] [--interference-new-tokens 128]]", 2);
  }
  std::vector<int> levels;
  for (absl::string_view p : absl::StrSplit(args->Get("concurrency", "1,4,8,16"), ',', absl::SkipEmpty())) {
    int v = std::atoi(std::string(p).c_str());
    if (v < 1) return Fail(cmd, "--concurrency takes positive integers, e.g. 1,4,8,16", 2);
    levels.push_back(v);
  }
  NumericFlags num(*args);
  const int64_t context_tokens = num.Int("context-tokens", 2048);
  const int64_t max_new = num.Int("max-new-tokens", 64);
  const int requests = static_cast<int>(num.Int("requests", 2));
  const int64_t prompt_tokens = num.Int("prompt-tokens", 16);
  const uint64_t seed = static_cast<uint64_t>(num.Int("seed", 1));
  const int64_t questions = num.Int("questions-per-slot", 0);
  const int64_t contexts = num.Int("question-contexts", 4);
  const int64_t streams = num.Int("interference-streams", 8);
  const int64_t interference_ctx = num.Int("interference-context-tokens", 2048);
  const int64_t new_tokens = num.Int("interference-new-tokens", 128);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
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
  std::mt19937_64 rng(seed);
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
  // Warm up (first-call allocations) with one short request per context, so that every level
  // starts from the same state: each context's slot prefix in the decoder's prefix cache, as
  // for the repeated questions this bench stands for (--questions-per-slot measures the first
  // question's cost). Warming only the first context made one stream's prefix cached and
  // seven of eight streams' not, which compared a cached prefill with fresh ones.
  std::vector<icae::v1::GenerateRequest> warm = slot_reqs;
  for (auto& w : warm) w.mutable_stopping()->set_max_new_tokens(1);
  RunLoad(*dch, co, max_level, 1, warm);
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
  auto random_id = [&] { return dist(rng); };
  if (questions > 0) {
    if (questions < 2 || contexts < 1) return Fail(cmd, "--questions-per-slot needs >= 2, --question-contexts >= 1", 2);
    int rc = QuestionsPerSlot(cmd, *estub, *dstub, co, random_id, L, prompt_tokens, max_new, static_cast<int>(questions),
                              static_cast<int>(contexts));
    if (rc != 0) return rc;
  }
  if (args->Has("interference")) {
    const int64_t ctx_tokens = std::min(interference_ctx, info.max_context_tokens());
    if (streams < 1 || ctx_tokens < 1 || new_tokens < 2) return Fail(cmd, "bad --interference-* value", 2);
    icae::v1::GenerateRequest b;
    b.set_mode(icae::v1::MODE_RAW);
    b.mutable_context_ids()->add_ids(1);
    for (int64_t i = 1; i < ctx_tokens; ++i) b.mutable_context_ids()->add_ids(random_id());
    for (int64_t i = 0; i < prompt_tokens; ++i) b.mutable_prompt_ids()->add_ids(random_id());
    b.mutable_stopping()->set_max_new_tokens(1);
    b.mutable_stopping()->set_ignore_eos(true);
    int rc = Interference(cmd, *dch, co, slot_reqs, b, static_cast<int>(streams), new_tokens);
    if (rc != 0) return rc;
  }
  return 0;
}

ICAE_REGISTER_COMMAND("bench serve", "load-test the services: tokens/s, TTFT and inter-token latency vs concurrency", BenchServe);

}  // namespace
}  // namespace icae::tools
