// Clients of the services:
//   icae encode   --server ADDR (--text T | --file F | --ids "1 2 3") [--verbose]
//   icae generate --server ADDR (--slot ID... | --context T | --context-file F) [--prompt P]
//                 [--mode M] [sampling flags] [--stop S...] [--print-ids] [--verbose]
//   icae ask      --encoder ADDR --decoder ADDR (--text T | --file F) [--prompt P] [...]
// Common: --api-key KEY (or $ICAE_API_KEY), --tls-ca PEM, --timeout SECONDS.
// The answer streams to stdout as it arrives; errors print "icae <cmd>: CODE: message".
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/server/client.h"
#include "common/server/status.h"
#include "common/util/mapped_file.h"
#include "icae/v1/icae.grpc.pb.h"
#include "tools/args.h"
#include "tools/command.h"
#include "tools/model_flags.h"

namespace icae::tools {
namespace {

int FailStatus(const std::string& cmd, const absl::Status& st) {
  std::cerr << "icae " << cmd << ": " << absl::StatusCodeToString(st.code()) << ": " << st.message() << "\n";
  return 1;
}

const std::set<std::string>& ConnectFlags() {
  static const std::set<std::string> f = {"api-key", "tls-ca", "tls-server-name", "timeout"};
  return f;
}

server::ClientOptions ClientOptionsFromArgs(const Args& args) {
  server::ClientOptions o;
  const char* env = std::getenv("ICAE_API_KEY");
  o.api_key = args.Get("api-key", env ? env : "");
  o.tls_ca_file = args.Get("tls-ca");
  o.tls_server_name = args.Get("tls-server-name");
  return o;
}

void PrepareContext(grpc::ClientContext* ctx, const Args& args, const server::ClientOptions& o) {
  server::AddAuth(ctx, o);
  auto t = args.GetDouble("timeout", 0);
  if (t.ok() && *t > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(*t * 1e6)));
  }
}

// Reads the context from --text / --file / --ids into the request.
absl::Status FillEncodeRequest(const Args& args, icae::v1::EncodeRequest* req) {
  int given = args.Has("text") + args.Has("file") + args.Has("ids");
  if (given != 1) return absl::InvalidArgumentError("give exactly one of --text, --file, --ids");
  if (args.Has("text")) {
    req->set_text(args.Get("text"));
  } else if (args.Has("file")) {
    auto text = ReadFileToString(args.Get("file"));
    if (!text.ok()) return text.status();
    req->set_text(*text);
  } else {
    auto ids = ParseIdList(args.Get("ids"));
    if (!ids.ok()) return ids.status();
    for (int64_t id : *ids) req->mutable_token_ids()->add_ids(id);
  }
  return absl::OkStatus();
}

absl::StatusOr<icae::v1::EncodeResponse> CallEncode(const std::string& addr, const Args& args,
                                                    const icae::v1::EncodeRequest& req) {
  server::ClientOptions co = ClientOptionsFromArgs(args);
  auto channel = server::MakeChannel(addr, co);
  if (!channel.ok()) return channel.status();
  auto stub = icae::v1::Encoder::NewStub(*channel);
  grpc::ClientContext ctx;
  PrepareContext(&ctx, args, co);
  icae::v1::EncodeResponse resp;
  grpc::Status st = stub->Encode(&ctx, req, &resp);
  if (!st.ok()) return server::FromGrpcStatus(st);
  return resp;
}

std::set<std::string> GenerateValueFlags() {
  std::set<std::string> f = {"server", "slot", "prompt", "prompt-ids", "mode", "stop", "context",
                             "context-file", "context-ids", "request-id"};
  f.insert(SamplingFlagNames().begin(), SamplingFlagNames().end());
  f.insert(ConnectFlags().begin(), ConnectFlags().end());
  return f;
}

// Sampling, stopping, prompt and mode flags → request.
absl::Status FillGenerateRequest(const Args& args, icae::v1::GenerateRequest* req) {
  req->set_request_id(args.Get("request-id"));
  if (args.Has("prompt") && args.Has("prompt-ids")) {
    return absl::InvalidArgumentError("give --prompt or --prompt-ids, not both");
  }
  if (args.Has("prompt")) req->set_prompt_text(args.Get("prompt"));
  if (args.Has("prompt-ids")) {
    auto ids = ParseIdList(args.Get("prompt-ids"));
    if (!ids.ok()) return ids.status();
    for (int64_t id : *ids) req->mutable_prompt_ids()->add_ids(id);
  }
  const std::string mode = args.Get("mode", "");
  if (mode.empty()) req->set_mode(icae::v1::MODE_UNSPECIFIED);
  else if (mode == "autoencode" || mode == "ae") req->set_mode(icae::v1::MODE_AUTOENCODE);
  else if (mode == "instruct") req->set_mode(icae::v1::MODE_INSTRUCT);
  else if (mode == "continue") req->set_mode(icae::v1::MODE_CONTINUE);
  else if (mode == "raw") req->set_mode(icae::v1::MODE_RAW);
  else return absl::InvalidArgumentError("--mode must be autoencode, instruct, continue or raw");
  auto* s = req->mutable_sampling();
  auto temperature = args.GetDouble("temperature", 0.0);
  auto top_p = args.GetDouble("top-p", 0.0);
  auto top_k = args.GetInt("top-k", 0);
  auto rep = args.GetDouble("repetition-penalty", 0.0);
  auto max_new = args.GetInt("max-new-tokens", 0);
  for (const absl::Status& st : {temperature.status(), top_p.status(), top_k.status(), rep.status(), max_new.status()}) {
    if (!st.ok()) return st;
  }
  s->set_temperature(*temperature);
  s->set_top_p(*top_p);
  s->set_top_k(*top_k);
  s->set_repetition_penalty(*rep);
  if (args.Has("seed")) {
    auto seed = args.GetInt("seed", 0);
    if (!seed.ok()) return seed.status();
    s->set_seed(static_cast<uint64_t>(*seed));
  }
  auto* st = req->mutable_stopping();
  st->set_max_new_tokens(*max_new);
  for (const auto& stop : args.GetAll("stop")) st->add_stop_sequences(stop);
  for (const auto& ids : args.GetAll("stop-id")) {
    auto parsed = ParseIdList(ids);
    if (!parsed.ok()) return parsed.status();
    for (int64_t id : *parsed) st->add_stop_token_ids(id);
  }
  st->set_ignore_eos(args.Has("ignore-eos"));
  return absl::OkStatus();
}

// Streams the answer to stdout. Returns the final message's status; *streamed tells whether
// anything reached stdout (a stream that did is never replayed).
absl::Status StreamGenerate(const std::string& addr, const Args& args, const icae::v1::GenerateRequest& req,
                            bool* streamed = nullptr) {
  server::ClientOptions co = ClientOptionsFromArgs(args);
  auto channel = server::MakeChannel(addr, co);
  if (!channel.ok()) return channel.status();
  auto stub = icae::v1::Decoder::NewStub(*channel);
  grpc::ClientContext ctx;
  PrepareContext(&ctx, args, co);
  auto reader = stub->Generate(&ctx, req);
  icae::v1::GenerateResponse msg;
  icae::v1::GenerateFinal final;
  const bool print_ids = args.Has("print-ids");
  bool first = true;
  while (reader->Read(&msg)) {
    if (streamed != nullptr) *streamed = true;
    if (print_ids) {
      for (int64_t id : msg.token_ids()) {
        std::cout << (first ? "" : " ") << id;
        first = false;
      }
    } else {
      std::cout << msg.text();
    }
    std::cout << std::flush;
    if (msg.has_final()) final = msg.final();
  }
  grpc::Status st = reader->Finish();
  std::cout << "\n" << std::flush;
  if (!st.ok()) return server::FromGrpcStatus(st);
  if (args.Has("verbose")) {
    const char* reasons[] = {"unspecified", "eos", "length", "stop_sequence", "stop_token", "cancelled", "error"};
    int r = static_cast<int>(final.finish_reason());
    std::cerr << "finish=" << (r >= 0 && r < 7 ? reasons[r] : "?")
              << (final.stop_sequence().empty() ? "" : " stop=\"" + final.stop_sequence() + "\"")
              << " slots=" << final.usage().slot_count() << " prompt_tokens=" << final.usage().prompt_tokens()
              << " completion_tokens=" << final.usage().completion_tokens()
              << " cached_prefix_tokens=" << final.usage().cached_prefix_tokens()
              << " ttft_ms=" << final.timings().time_to_first_token_seconds() * 1e3
              << " total_ms=" << final.timings().total_seconds() * 1e3 << " seed=" << final.seed() << "\n";
  }
  return absl::OkStatus();
}

int EncodeCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "encode";
  std::set<std::string> vf = {"server", "text", "file", "ids", "request-id"};
  vf.insert(ConnectFlags().begin(), ConnectFlags().end());
  auto args = Args::Parse(argv, vf, {"verbose"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  const std::string usage = "usage: icae encode --server HOST:PORT (--text T | --file F | --ids \"1 2 3\") [--verbose]";
  if (!args->Has("server") || !args->positional().empty()) return Fail(cmd, usage, 2);
  if (auto t = args->GetDouble("timeout", 0); !t.ok()) return Fail(cmd, std::string(t.status().message()), 2);
  icae::v1::EncodeRequest req;
  req.set_request_id(args->Get("request-id"));
  if (auto st = FillEncodeRequest(*args, &req); !st.ok()) return Fail(cmd, std::string(st.message()) + "\n" + usage, 2);
  auto resp = CallEncode(args->Get("server"), *args, req);
  if (!resp.ok()) return FailStatus(cmd, resp.status());
  std::cout << resp->slot_id() << "\n";
  if (args->Has("verbose")) {
    std::cerr << "tokens=" << resp->token_count() << " slots=" << resp->slot_count()
              << " segments=" << resp->segment_count() << " cached=" << (resp->cached() ? "true" : "false") << "\n";
  }
  return 0;
}

int GenerateCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "generate";
  auto args = Args::Parse(argv, GenerateValueFlags(), {"verbose", "print-ids", "ignore-eos"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  const std::string usage =
      "usage: icae generate --server HOST:PORT (--slot ID [--slot ID...] | --context T | --context-file F)"
      " [--prompt P] [--mode autoencode|instruct|continue|raw] [--max-new-tokens N] [--temperature T]"
      " [--top-p P] [--top-k K] [--seed S] [--stop TEXT] [--print-ids] [--verbose]";
  if (!args->Has("server") || !args->positional().empty()) return Fail(cmd, usage, 2);
  if (auto t = args->GetDouble("timeout", 0); !t.ok()) return Fail(cmd, std::string(t.status().message()), 2);
  icae::v1::GenerateRequest req;
  for (const auto& id : args->GetAll("slot")) req.add_slot_ids(id);
  if (args->Has("context")) req.set_context_text(args->Get("context"));
  if (args->Has("context-file")) {
    auto text = ReadFileToString(args->Get("context-file"));
    if (!text.ok()) return FailStatus(cmd, text.status());
    req.set_context_text(*text);
  }
  if (args->Has("context-ids")) {
    auto ids = ParseIdList(args->Get("context-ids"));
    if (!ids.ok()) return Fail(cmd, std::string(ids.status().message()), 2);
    for (int64_t id : *ids) req.mutable_context_ids()->add_ids(id);
  }
  if (auto st = FillGenerateRequest(*args, &req); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  if (auto st = StreamGenerate(args->Get("server"), *args, req); !st.ok()) return FailStatus(cmd, st);
  return 0;
}

// `icae ask` retries as a careful backend does (docs/CLIENTS.md): UNAVAILABLE (a service
// draining or restarting, the store unreachable) is retried up to --retries times with
// exponential back-off from --backoff-ms (x2 per attempt, capped at 5 s, with jitter) — for
// Encode, and for a Generate that has not streamed anything yet; NOT_FOUND for the slot (evicted,
// or the store lost it) encodes the context again, once.
struct RetryPolicy {
  int64_t retries = 4;
  int64_t backoff_ms = 200;
  void Sleep(int64_t attempt) const {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    const double base = std::min<double>(5000, static_cast<double>(backoff_ms) * double(int64_t{1} << std::min<int64_t>(attempt, 20)));
    const double ms = base * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(ms * 1000)));
  }
};

int AskCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "ask";
  std::set<std::string> vf = GenerateValueFlags();
  vf.insert({"encoder", "decoder", "text", "file", "ids", "retries", "backoff-ms"});
  auto args = Args::Parse(argv, vf, {"verbose", "print-ids", "ignore-eos"});
  if (!args.ok()) return Fail(cmd, std::string(args.status().message()), 2);
  const std::string usage =
      "usage: icae ask --encoder HOST:PORT --decoder HOST:PORT (--file F | --text T) [--prompt P] [--retries N]"
      " [--backoff-ms MS] [generate flags]";
  if (!args->Has("encoder") || !args->Has("decoder") || !args->positional().empty()) return Fail(cmd, usage, 2);
  if (auto t = args->GetDouble("timeout", 0); !t.ok()) return Fail(cmd, std::string(t.status().message()), 2);
  RetryPolicy retry;
  NumericFlags num(*args);
  retry.retries = num.Int("retries", retry.retries);
  retry.backoff_ms = num.Int("backoff-ms", retry.backoff_ms);
  if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
  if (retry.retries < 0 || retry.retries > 100 || retry.backoff_ms < 0 || retry.backoff_ms > 60000) {
    return Fail(cmd, "--retries must be 0..100 and --backoff-ms 0..60000", 2);
  }
  icae::v1::EncodeRequest ereq;
  ereq.set_request_id(args->Get("request-id"));
  if (auto st = FillEncodeRequest(*args, &ereq); !st.ok()) return Fail(cmd, std::string(st.message()) + "\n" + usage, 2);
  icae::v1::GenerateRequest req;
  if (auto st = FillGenerateRequest(*args, &req); !st.ok()) return Fail(cmd, std::string(st.message()), 2);
  auto encode = [&]() -> absl::StatusOr<icae::v1::EncodeResponse> {
    for (int64_t attempt = 0;; ++attempt) {
      auto enc = CallEncode(args->Get("encoder"), *args, ereq);
      if (enc.ok() || !absl::IsUnavailable(enc.status()) || attempt >= retry.retries) return enc;
      if (args->Has("verbose")) std::cerr << "encode: " << enc.status() << "; retrying\n";
      retry.Sleep(attempt);
    }
  };
  for (int reencoded = 0;; ++reencoded) {
    auto enc = encode();
    if (!enc.ok()) return FailStatus(cmd, enc.status());
    if (args->Has("verbose")) {
      std::cerr << "slot_id=" << enc->slot_id() << " tokens=" << enc->token_count() << " slots=" << enc->slot_count()
                << " cached=" << (enc->cached() ? "true" : "false") << "\n";
    }
    req.clear_slot_ids();
    req.add_slot_ids(enc->slot_id());
    absl::Status st;
    for (int64_t attempt = 0;; ++attempt) {
      bool streamed = false;
      st = StreamGenerate(args->Get("decoder"), *args, req, &streamed);
      if (st.ok() || streamed || !absl::IsUnavailable(st) || attempt >= retry.retries) break;
      if (args->Has("verbose")) std::cerr << "generate: " << st << "; retrying\n";
      retry.Sleep(attempt);
    }
    if (absl::IsNotFound(st) && reencoded == 0) {
      if (args->Has("verbose")) std::cerr << "generate: " << st << "; encoding the context again\n";
      continue;
    }
    if (!st.ok()) return FailStatus(cmd, st);
    return 0;
  }
}

ICAE_REGISTER_COMMAND("encode", "compress a context on an encoder service; prints the slot ID", EncodeCmd);
ICAE_REGISTER_COMMAND("generate", "stream an answer from a decoder service for slot IDs", GenerateCmd);
ICAE_REGISTER_COMMAND("ask", "encode a context and stream an answer to a prompt (both services)", AskCmd);

}  // namespace
}  // namespace icae::tools
