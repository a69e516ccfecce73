// `icae bench tokenize`: how fast a ~100 KB context encodes and decodes (the encoder service
// tokenizes whole contexts, so this must stay far below the model's own time).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/tokenizer/tokenizer.h"
#include "tools/args.h"
#include "tools/command.h"

namespace icae::tools {
namespace {

constexpr char kUsage[] =
    "usage: icae bench tokenize [--tokenizer FILE] [--text-file F] [--kb 100] [--iters 10]\n"
    "  Times Encode and Decode of a ~KB-kilobyte text (default: the start of a shared corpus,\n"
    "  else a built-in paragraph repeated). --tokenizer defaults to the shared Mistral\n"
    "  tokenizer ($ICAE_TESTDATA/../tokenizers/mistral-v1/tokenizer.model).\n";

constexpr char kParagraph[] =
    "The encoder service receives a long context once, compresses it into memory slots and "
    "stores them under a slot ID; decoder replicas then answer prompts conditioned on those "
    "slots. Naïve façades, “curly quotes”, em-dashes — and the odd emoji 🍕 keep the "
    "tokenizer honest, as do numbers like 3.14159 and 1,000,000.\n";

std::string SharedDir() {
  const char* env = std::getenv("ICAE_TESTDATA");
  if (env != nullptr && env[0] != '\0') return std::string(env) + "/..";
  return "../shared";
}

bool Exists(const std::string& path) { return std::ifstream(path).good(); }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Cuts `text` to at most `bytes` without splitting a UTF-8 character.
void TruncateUtf8(std::string* text, size_t bytes) {
  if (text->size() <= bytes) return;
  size_t end = bytes;
  while (end > 0 && (static_cast<uint8_t>((*text)[end]) & 0xC0) == 0x80) --end;
  text->resize(end);
}

template <typename F>
double MinMs(int iters, F&& f) {
  double best = 1e300;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

int BenchTokenizeMain(const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {"tokenizer", "text-file", "kb", "iters"}, {"help"});
  if (!args.ok() || !args->positional().empty()) {
    if (!args.ok()) std::cerr << "icae: " << args.status().message() << "\n";
    std::cerr << kUsage;
    return 2;
  }
  if (args->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  auto kb = args->GetInt("kb", 100);
  auto iters = args->GetInt("iters", 10);
  if (!kb.ok() || !iters.ok() || *kb <= 0 || *iters <= 0) {
    std::cerr << "icae: --kb and --iters take positive integers\n" << kUsage;
    return 2;
  }
  std::string tok_path = args->Get("tokenizer");
  if (tok_path.empty()) {
    tok_path = SharedDir() + "/tokenizers/mistral-v1/tokenizer.model";
    if (!Exists(tok_path)) {
      std::cerr << "icae bench tokenize: no --tokenizer given and " << tok_path
                << " not found (set ICAE_TESTDATA)\n";
      return 2;
    }
  }
  auto tok = Tokenizer::Load(tok_path);
  if (!tok.ok()) {
    std::cerr << "icae bench tokenize: " << tok.status().message() << "\n";
    return 1;
  }

  const size_t bytes = static_cast<size_t>(*kb) * 1024;
  std::string text, source;
  if (args->Has("text-file")) {
    source = args->Get("text-file");
    if (!Exists(source)) {
      std::cerr << "icae bench tokenize: cannot read " << source << "\n";
      return 1;
    }
    text = ReadAll(source);
  } else {
    for (const char* name : {"wikitext2-valid.txt", "tinyshakespeare.txt"}) {
      const std::string path = SharedDir() + "/corpora/" + name;
      if (Exists(path)) {
        source = path;
        text = ReadAll(path);
        break;
      }
    }
    if (text.empty()) source = "built-in paragraph";
  }
  if (text.empty()) text = kParagraph;
  // Repeat short texts up to the requested size.
  const std::string unit = text;
  while (text.size() < bytes) text += unit;
  TruncateUtf8(&text, bytes);

  const Tokenizer& t = **tok;
  std::vector<int32_t> ids;
  const double encode_ms = MinMs(static_cast<int>(*iters), [&] { ids = t.Encode(text, true); });
  std::string decoded;
  const double decode_ms =
      MinMs(static_cast<int>(*iters), [&] { decoded = t.Decode(ids).value_or(""); });
  const double stream_ms = MinMs(static_cast<int>(*iters), [&] {
    IncrementalDecoder dec(t);
    std::string out;
    for (int32_t id : ids) out += dec.Push(id);
    out += dec.Flush();
  });
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::cout << absl::StrFormat("tokenizer: %s (%s, vocab %d)\n", tok_path, t.format(),
                               t.vocab_size());
  std::cout << absl::StrFormat("text:      %s, %d bytes -> %d tokens\n", source, text.size(),
                               ids.size());
  std::cout << absl::StrFormat("encode:    %.2f ms  (%.1f MB/s, %.0f tokens/s; best of %d)\n",
                               encode_ms, mb / (encode_ms / 1e3),
                               ids.size() / (encode_ms / 1e3), *iters);
  std::cout << absl::StrFormat("decode:    %.2f ms  (%.1f MB/s)\n", decode_ms,
                               mb / (decode_ms / 1e3));
  std::cout << absl::StrFormat("stream:    %.2f ms  (IncrementalDecoder, one id at a time)\n",
                               stream_ms);
  if (decoded != text) {
    std::cout << "note: Decode(Encode(text)) differs from the text (normalisation)\n";
  }
  return 0;
}

}  // namespace

ICAE_REGISTER_COMMAND("bench tokenize", "time encode/decode of a ~100 KB text",
                      BenchTokenizeMain);

}  // namespace icae::tools
